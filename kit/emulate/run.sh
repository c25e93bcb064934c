#!/usr/bin/env bash
# The CUDA kernels' numpy emulations (no GPU needed): index math and algorithms of the kernels written
# without a device, and the rounding behind the kit's parity bounds. Each prints its figures; errors
# of the emulations are float64 round-off (~1e-15) or exactly 0 on integer data.
# Usage: kit/emulate/run.sh   (python3 with numpy)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3 -c "import numpy" 2>/dev/null || { echo "emulate: needs python3 with numpy" >&2; exit 2; }
python3 "$here/blocksparse_rows.py"
python3 "$here/blocksparse_group.py" 4
python3 "$here/blocksparse_group.py" 8
python3 "$here/blocksparse_staged.py"
python3 "$here/lora_augment.py"
python3 "$here/attention_backward.py"
python3 "$here/rounding_bounds.py"
