"""Put on PYTHONPATH by autoprune's tests (``faults.environ()``): every Python process
they start listens for injected faults, as the test process itself does."""

import os

if os.environ.get("AUTOPRUNE_FAULT"):
    from autoprune.testing import faults

    faults.install()
