"""A small KEDA-style external scaler server (externalscaler.ExternalScaler over gRPC).

It scales on a queue length that the test controls: ``GetMetricSpec`` answers one metric,
``queueLength``, with the target from the trigger metadata ``target`` (default 5); ``GetMetrics``
returns the current length; ``IsActive`` is ``length > 0``; ``StreamIsActive`` sends the current
activity at once and then every change. Every request is recorded for assertions.

Run by hand: ``python tests/integration/external_scaler_server.py --port 6000``; type numbers on
stdin to set the queue length.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from capstan.scalers._grpc import externalscaler_pb2 as pb
from capstan.scalers._grpc import externalscaler_pb2_grpc as pb_grpc


class QueueLengthScaler(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.length = 0
        self.requests: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()

    async def set_length(self, length: int) -> None:
        self.length = length
        async with self._changed:
            self._changed.notify_all()

    async def IsActive(self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> pb.IsActiveResponse:  # noqa: N802
        self.requests.append(("IsActive", request))
        return pb.IsActiveResponse(result=self.length > 0)

    async def StreamIsActive(self, request: pb.ScaledObjectRef,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.IsActiveResponse]:
        self.requests.append(("StreamIsActive", request))
        active = self.length > 0
        yield pb.IsActiveResponse(result=active)
        while True:
            async with self._changed:
                await self._changed.wait()
            if (self.length > 0) != active:
                active = self.length > 0
                yield pb.IsActiveResponse(result=active)

    async def GetMetricSpec(self, request: pb.ScaledObjectRef,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> pb.GetMetricSpecResponse:
        self.requests.append(("GetMetricSpec", request))
        target = int(request.scalerMetadata.get("target", "5"))
        return pb.GetMetricSpecResponse(metricSpecs=[pb.MetricSpec(metricName="queueLength", targetSize=target)])

    async def GetMetrics(self, request: pb.GetMetricsRequest,  # noqa: N802
                         context: grpc.aio.ServicerContext) -> pb.GetMetricsResponse:
        self.requests.append(("GetMetrics", request))
        if request.metricName != "queueLength":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no metric {request.metricName!r}")
        return pb.GetMetricsResponse(metricValues=[pb.MetricValue(metricName=request.metricName,
                                                                  metricValue=self.length)])


async def start(servicer: QueueLengthScaler, port: int = 0,
                credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.aio.Server, int]:
    """Serve on 127.0.0.1 (port 0: any free port); returns the server and its port."""
    server = grpc.aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)
    address = f"127.0.0.1:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return server, bound


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=6000)
    args = parser.parse_args()
    servicer = QueueLengthScaler()
    server, port = await start(servicer, args.port)
    print(f"external scaler on 127.0.0.1:{port}; type a queue length and Enter", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip().isdigit():
            await servicer.set_length(int(line))
    await server.wait_for_termination()  # stdin closed: keep serving the last length


if __name__ == "__main__":
    asyncio.run(_main())
