"""A code judge that blocks its worker's event loop the first time it runs (``tests/test_operating.py``).

``async def`` judges run on the worker's event loop; ``time.sleep`` inside one blocks every evaluation
of the process. The first call (no file at ``$TJ_TEST_BLOCK_FLAG`` yet) creates the file and sleeps for
ten minutes; later calls (a redelivery, after the worker was replaced) answer at once.
"""

import os
import time

from tracejudge.judges.registry import code_judge


@code_judge("blocks_once", version="1")
async def blocks_once(judge_input):
    flag = os.environ.get("TJ_TEST_BLOCK_FLAG")
    if flag and not os.path.exists(flag):
        open(flag, "w").close()
        time.sleep(600)  # blocks the event loop: a bug in a user's judge
    return 1.0, "answered"

