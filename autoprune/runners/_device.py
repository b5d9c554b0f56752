"""Device-side entry: read a request on stdin, time the artifact, print one result line."""

from __future__ import annotations

import json
import sys


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        from autoprune._config import from_dict
        from autoprune.backends import create
        from autoprune.profiles import DeviceProfile

        from autoprune.testing import faults

        profile = from_dict(DeviceProfile, request["profile"], "request.profile")
        faults.inject("device")
        measurement = create(profile.backend).time(request["artifact"], profile)
        payload = {"measurement": measurement.to_dict()}
    except MemoryError:
        limit = request["profile"].get("measurement", {}).get("memory_limit_mb")
        payload = {"error": f"timing process ran out of memory (limit {limit} MB)"}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this trial's reason
        payload = {"error": f"{type(exc).__name__}: {exc}"}
    from autoprune.runners.local import RESULT_TAG

    print(RESULT_TAG + json.dumps(payload), flush=True)




if __name__ == "__main__":
    main()
