"""One worker process of ``tracejudge worker --processes N`` (started by ``worker/supervisor.py``).

``python -m tracejudge.worker.child [CELERY OPTIONS...]``: a whole Celery worker (consumer, lease,
event loop, threads), whose health goes to a file its supervisor reads instead of a server of its own,
and which shuts down warm when its supervisor is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _follow_parent(parent: int) -> None:
    """Warm shutdown (SIGTERM to ourselves) once the supervisor that started us is gone (re-parented)."""
    stop = threading.Event()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main(argv: list[str] | None = None) -> int:
    from tracejudge.worker import get_app, serving
    from tracejudge.worker.start import run_worker_process

    serving.mark_supervised()
    threading.Thread(target=_follow_parent, args=(os.getppid(),), name="tracejudge-parent-watch", daemon=True).start()
    return run_worker_process(get_app(), list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
