"""A code judge that blocks its worker's event loop (``tests/test_operating.py``).

``async def`` judges run on the worker's event loop; ``time.sleep`` inside one blocks every evaluation
of the process. Every call touches ``$TJ_TEST_BLOCK_FLAG`` (so the test knows it ran) and sleeps for
ten minutes.
"""

import os
import time

from tracejudge.judges.registry import code_judge


@code_judge("blocks_loop", version="1")
async def blocks_loop(judge_input):
    open(os.environ["TJ_TEST_BLOCK_FLAG"], "a").close()
    time.sleep(600)  # blocks the event loop: a bug in a user's judge
    return 1.0, "answered"

