"""The bundled web scenario and shapes under real locust, for those who have it (locust is not a dependency).

    locust -f loadtest/locustfile.py -H http://127.0.0.1:8080 --headless -u 64 -r 64 -t 2m --csv reports/locust
    LOADTEST_SHAPE=step LOADTEST_SHAPE_ARGS=low=4,high=64,start=15,length=45,end=120 \\
        locust -f loadtest/locustfile.py -H http://127.0.0.1:8080 --headless --csv reports/locust

Same tasks, weights and names as loadtest/scenarios/web.py; LOADTEST_SHAPE takes what --shape takes.
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path
from types import ModuleType

try:
    from locust import FastHttpUser, LoadTestShape, constant, task
except ImportError as exc:  # keeps `import loadtest.locustfile` from failing obscurely without locust
    raise ImportError("loadtest/locustfile.py runs under locust (pip install locust); "
                      "with loadtest itself use: python -m loadtest -f loadtest/scenarios/web.py") from exc



def _load_shapes() -> ModuleType:
    """shapes.py by its path: it needs only the standard library, while the loadtest package needs
    httptools and uvloop, which a locust-only environment may lack."""
    spec = importlib.util.spec_from_file_location("loadtest_shapes", Path(__file__).with_name("shapes.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parse_shape = _load_shapes().parse_shape


class WebUser(FastHttpUser):
    wait_time = constant(0)

    @task(4)
    def index(self) -> None:
        self.client.get("/")

    @task(1)
    def item(self) -> None:
        self.client.get(f"/item/{random.randrange(1000)}", name="/item/[id]")


if os.environ.get("LOADTEST_SHAPE"):
    class BundledShape(LoadTestShape):
        """Delegates to a bundled shape's pure at(run_time), so both tools see the very same load."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.shape = parse_shape(os.environ["LOADTEST_SHAPE"], os.environ.get("LOADTEST_SHAPE_ARGS", ""))

        def tick(self):  # type: ignore[no-untyped-def,unused-ignore]
            return self.shape.at(self.get_run_time())
