"""Both Redis halves of the store turn connection failures into ``StoreUnavailable``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.exceptions

from broker.store.base import StoreUnavailable

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")


def translated(
    method: Callable[Concatenate[_S, _P], Awaitable[_T]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
    """Turn Redis connection failures into ``StoreUnavailable``."""

    async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(self, *args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("redis unreachable: %s", type(exc).__name__)
            raise StoreUnavailable("redis is unreachable") from exc

    functools.update_wrapper(wrapper, method)
    return wrapper
