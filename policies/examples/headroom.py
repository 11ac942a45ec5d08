"""A custom policy in ten lines: LB_POLICY=policies.examples.headroom:Headroom"""
import math
from policies import Decision


class Headroom:
    name = "headroom"

    def __init__(self, settings):
        self.target = settings.get("target_inflight", 10) * 0.8  # keep 20% spare

    def initial_state(self):
        return None

    def decide(self, snapshot, state):
        if snapshot.panic_inflight is None:
            return Decision(snapshot.replicas, "holding: no data yet"), state
        want = math.ceil(snapshot.panic_inflight / self.target)
        return Decision(want, f"{snapshot.panic_inflight:.1f} in flight / {self.target:g} -> {want}"), state
