"""Cost of the atomic fetch (``tracejudge.worker.fetch``) against kombu's plain BRPOP fetch, in one run.

Publishes ``--messages`` messages, then takes and acknowledges them one by one
through kombu's Redis channel exactly as a worker's event loop does
(``_register_BRPOP`` then ``_brpop_read``), first with kombu's own fetch and
then with the atomic one, and prints the time per message of each.

    .venv/bin/python bench/fetch.py --redis redis://127.0.0.1:6379/0 --messages 2000
"""

from __future__ import annotations

import argparse
import time
import uuid

from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import redis as kredis

NAME = "bench-fetch"


def run(url: str, messages: int) -> float:
    """Seconds per message to fetch, deliver and acknowledge ``messages`` messages."""
    options = {"global_keyprefix": f"tjbench-{uuid.uuid4().hex[:8]}:"}
    with Connection(url, transport_options=options) as conn:
        channel = conn.channel()
        queue = Queue(NAME, Exchange(NAME, type="direct"), routing_key=NAME)
        queue(channel).declare()
        producer = Producer(channel)
        body = {"trace_id": "tr-" + "0" * 32, "config": {"judges": ["x"] * 20}}
        for _ in range(messages):
            producer.publish(body, exchange=NAME, routing_key=NAME, serializer="json")
        taken: list = []
        channel.basic_consume(NAME, no_ack=False, callback=taken.append, consumer_tag="bench")
        started = time.perf_counter()
        for _ in range(messages):
            conn.transport.cycle._register_BRPOP(channel)
            channel._brpop_read()
            taken.pop().ack()
        elapsed = time.perf_counter() - started
        queue(channel).delete()
        return elapsed / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tracejudge.worker import fetch

    plain_methods = (kredis.Channel._brpop_start, kredis.Channel._brpop_read)
    fetch.install()
    atomic_methods = (kredis.Channel._brpop_start, kredis.Channel._brpop_read)
    figures: dict[str, list[float]] = {"kombu BRPOP fetch + ack": [], "atomic fetch + ack": []}
    for _ in range(args.rounds):  # alternating, so load on the machine hits both alike
        for name, methods in zip(figures, (plain_methods, atomic_methods)):
            kredis.Channel._brpop_start, kredis.Channel._brpop_read = methods
            figures[name].append(run(args.redis, args.messages))
    print(f"messages: {args.messages} x {args.rounds} rounds (median per message)")
    medians = {name: sorted(values)[len(values) // 2] for name, values in figures.items()}
    for name, value in medians.items():
        print(f"{name:26s} {value * 1e6:8,.0f} us/message")
    plain, atomic = medians.values()
    print(f"atomic vs plain: {(atomic / plain - 1) * 100:+.0f} %")


if __name__ == "__main__":
    main()
