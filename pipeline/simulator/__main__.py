"""Process mode of :class:`~pipeline.simulator.Simulator`: the parent writes the configuration
as one JSON line on stdin, reads the "listening on" line, and stops us by closing stdin.

    python -m pipeline.simulator --port 0 < config.json
"""

import argparse
import sys

from pipeline.simulator._config import SimulatorConfig
from pipeline.simulator._serve import serve_forever

parser = argparse.ArgumentParser(prog="python -m pipeline.simulator")
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--config-stdin", action="store_true", help="(always: kept for clarity)")
args = parser.parse_args()
sys.exit(serve_forever(SimulatorConfig.from_json(sys.stdin.buffer.readline()), args.port,
                       watch_stdin=True))
