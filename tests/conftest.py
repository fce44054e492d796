"""Suite-wide set-up: shared fixture plugins and a CPU-only, quiet JAX."""

import os

# Trainer tests run on the CPU whatever the machine has; set before JAX is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytest_plugins = ["tests.cluster.fixtures", "tests.s3"]
