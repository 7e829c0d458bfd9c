"""Trace context and the file's audio.id follow the work into threads, tasks and processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing

import numpy as np

import otel_audio
from otel_audio import audio_pipeline, audio_stage, semconv
from tests.process_worker import run_stage_from_carrier

RATE = 16_000


@audio_stage("enhancement")
def enhance(audio, sample_rate):
    return audio


@audio_stage("async_enhancement")
async def enhance_async(audio, sample_rate):
    await asyncio.sleep(0)
    return audio


def chunk() -> np.ndarray:
    return np.zeros(RATE // 10, dtype=np.float32)


def assert_children_of(recorded, name: str, root_name: str, audio_id: str, count: int) -> None:
    root = recorded.span(root_name)
    children = recorded.spans(name)
    assert len(children) == count
    for span in children:
        assert span.context.trace_id == root.context.trace_id
        assert span.parent.span_id == root.context.span_id
        assert span.attributes[semconv.AUDIO_ID] == audio_id


def test_context_executor_carries_trace_and_audio_id_into_threads(recorded):
    with audio_pipeline(audio_id="threads", name="p"), otel_audio.ContextExecutor(max_workers=4) as pool:
        list(pool.map(lambda a: enhance(a, RATE), [chunk() for _ in range(8)]))
    assert_children_of(recorded, "enhancement", "p", "threads", 8)


def test_plain_thread_pool_loses_the_trace_which_is_why_context_executor_exists(recorded):
    with (
        audio_pipeline(audio_id="plain", name="p"),
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pool.submit(enhance, chunk(), RATE).result()
    span = recorded.span("enhancement")
    assert span.parent is None
    assert semconv.AUDIO_ID not in span.attributes


def test_wrap_binds_context_for_a_later_thread(recorded):
    with audio_pipeline(audio_id="wrapped", name="p"):
        job = otel_audio.wrap(lambda: enhance(chunk(), RATE))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        pool.submit(job).result()
        pool.submit(job).result()
    assert_children_of(recorded, "enhancement", "p", "wrapped", 2)


def test_asyncio_tasks_inherit_context(recorded):
    async def main():
        async with audio_pipeline(audio_id="tasks", name="p"):
            await asyncio.gather(*(enhance_async(chunk(), RATE) for _ in range(5)))

    asyncio.run(main())
    assert_children_of(recorded, "async_enhancement", "p", "tasks", 5)


def test_inject_writes_w3c_traceparent_and_audio_baggage(recorded):
    with audio_pipeline(audio_id="carrier", name="p") as run:
        carrier = otel_audio.inject()
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    ctx = run.span.get_span_context()
    assert (version, int(trace_id, 16), int(span_id, 16)) == ("00", ctx.trace_id, ctx.span_id)
    assert int(flags, 16) & 0x01  # sampled
    assert "audio.id=carrier" in carrier["baggage"]


def test_context_crosses_a_process_boundary_through_the_carrier(recorded):
    with audio_pipeline(audio_id="proc-1", name="p") as run:
        carrier = otel_audio.inject()
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        trace_id, parent_id, audio_id, pipeline = pool.submit(run_stage_from_carrier, carrier).result(
            timeout=120
        )
    ctx = run.span.get_span_context()
    assert (trace_id, parent_id) == (ctx.trace_id, ctx.span_id)
    assert (audio_id, pipeline) == ("proc-1", "p")
