// The local camera and microphone: asked for at the session's quality (ideal values only, so
// a weaker camera still works), with a fallback to whatever the device can give.

/** getUserMedia constraints for a quality profile ({width, height, frame_rate}). */
export function constraintsFor(quality) {
  const video = {};
  if (quality?.width) video.width = { ideal: quality.width };
  if (quality?.height) video.height = { ideal: quality.height };
  if (quality?.frame_rate) video.frameRate = { ideal: quality.frame_rate };
  return { audio: { echoCancellation: true, noiseSuppression: true }, video };
}

/**
 * Our media: resolves to {stream, problem}. `problem` is null, or a sentence for the person
 * ("No camera was found: others will only hear you."). Never throws.
 */
export async function openMedia(quality) {
  const stream = new MediaStream();
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream, problem: "This browser cannot use a camera here. You can still see and hear the others." };
  }
  const wanted = constraintsFor(quality);
  const attempts = [wanted, { audio: wanted.audio, video: true }, { audio: wanted.audio }, { video: wanted.video }];
  let lastError = null;
  for (const constraints of attempts) {
    try {
      const got = await navigator.mediaDevices.getUserMedia(constraints);
      for (const track of got.getTracks()) stream.addTrack(track);
      prepare(stream);
      return { stream, problem: describeMissing(stream, lastError) };
    } catch (error) {
      lastError = error;
      if (error.name === "NotAllowedError" || error.name === "SecurityError") break;
    }
  }
  return { stream, problem: describeMissing(stream, lastError) };
}

/** Text and detail video: keep it sharp rather than smooth. */
function prepare(stream) {
  for (const track of stream.getVideoTracks()) {
    if ("contentHint" in track) track.contentHint = "detail";
  }
  for (const track of stream.getAudioTracks()) {
    if ("contentHint" in track) track.contentHint = "speech";
  }
}

function describeMissing(stream, error) {
  const audio = stream.getAudioTracks().length > 0;
  const video = stream.getVideoTracks().length > 0;
  if (audio && video) return null;
  if (error?.name === "NotAllowedError") {
    return "Camera and microphone are blocked. Allow them in the browser's settings, then join again. You can still see and hear the others.";
  }
  if (!audio && !video) return "No camera or microphone was found. You can still see and hear the others.";
  if (!video) return "No camera was found: the others will only hear you.";
  return "No microphone was found: the others will only see you.";
}

/** Bring the camera to a new profile (the TV learns it only from `joined`). */
export async function applyQuality(stream, quality) {
  const track = stream.getVideoTracks()[0];
  if (!track) return;
  try {
    await track.applyConstraints(constraintsFor(quality).video);
  } catch {
    // keep what the camera gives
  }
}

export function stopMedia(stream) {
  for (const track of stream?.getTracks() || []) track.stop();
}
