"""One way to run code around every kind of RPC handler, so each interceptor is one hook."""

from __future__ import annotations

import abc
import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias, cast

import grpc

# Strings: grpc's classes are generic only in its type stubs, not at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Around: TypeAlias = Callable[[str, Context], AbstractAsyncContextManager[None]]
# grpc's stubs type behaviours for the sync server; under grpc.aio they take the aio context.
Behaviour: TypeAlias = Callable[[Any, Context], Any]
# Looks at one request message before the handler gets it; raises a DomainError to refuse it.
RequestCheck: TypeAlias = Callable[[Any], None]


class RpcInterceptor(abc.ABC):
    """One hook around the handler of every RPC: `around()`. Servers run their hooks through
    one InterceptorChain (chain.py), the only grpc interceptor they install.

    `around()` runs in the RPC's own task, so contextvars it sets are visible to the handler,
    and exceptions raised by the handler (or by inner interceptors) pass through it.
    """

    @abc.abstractmethod
    def around(self, method: str, context: Context) -> AbstractAsyncContextManager[None]:
        """An async context manager entered before the handler runs and left after it ends."""


def wrap_handler(
    handler: Handler, method: str, around: Around, check: RequestCheck | None = None
) -> Handler:
    """A handler of the same kind and serializers whose behaviour runs inside `around`.

    `check` sees every request message inside `around` (so what it raises meets the error
    interceptor) and before the handler: the unary request at once, a stream's as they come.
    """
    serializers: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if not handler.response_streaming:
        unary_inner = cast(
            Behaviour, handler.stream_unary if handler.request_streaming else handler.unary_unary
        )

        async def unary_response(request: Any, context: Context) -> Any:
            async with around(method, context):
                result = unary_inner(_checked(request, handler.request_streaming, check), context)
                return await result if inspect.isawaitable(result) else result

        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(unary_response, **serializers)
        return grpc.unary_unary_rpc_method_handler(unary_response, **serializers)

    stream_inner = cast(
        Behaviour, handler.stream_stream if handler.request_streaming else handler.unary_stream
    )

    async def stream_response(request: Any, context: Context) -> AsyncIterator[Any]:
        async with around(method, context):
            checked = _checked(request, handler.request_streaming, check)
            async for response in _responses(stream_inner(checked, context)):
                yield response

    if handler.request_streaming:
        return grpc.stream_stream_rpc_method_handler(stream_response, **serializers)
    return grpc.unary_stream_rpc_method_handler(stream_response, **serializers)


def _checked(request: Any, streaming: bool, check: RequestCheck | None) -> Any:
    if check is None:
        return request
    if not streaming:
        check(request)
        return request
    return _checked_stream(request, check)


async def _checked_stream(requests: AsyncIterator[Any], check: RequestCheck) -> AsyncIterator[Any]:
    async for request in requests:
        check(request)
        yield request


async def _responses(produced: Any) -> AsyncIterator[Any]:
    # grpc.aio accepts three shapes of streaming handler: an async generator, a coroutine that
    # writes with context.write() and returns None, and (with a thread pool) a plain generator.
    if inspect.isasyncgen(produced) or isinstance(produced, AsyncIterator):
        async for response in produced:
            yield response
    elif inspect.isawaitable(produced):
        await produced
    else:
        for response in produced:
            yield response


def status_code_name(context: Context, error: BaseException | None) -> str:
    """The status the client will see: set by abort()/set_code(), else derived from `error`."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        # gRPC cancels the handler both when the caller gives up and when its deadline passes.
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED.name
        return grpc.StatusCode.CANCELLED.name
    code = _context_code(context)
    if code is not None:
        return code.name
    if error is None:
        return grpc.StatusCode.OK.name
    # An exception no interceptor turned into a status: grpc.aio reports it as UNKNOWN.
    return grpc.StatusCode.UNKNOWN.name


_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _context_code(context: Context) -> grpc.StatusCode | None:
    # Depending on the grpcio version code() gives a StatusCode, its number, or None when unset.
    code: object = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return _CODES_BY_NUMBER.get(code)
    return None
