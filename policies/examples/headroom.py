"""A whole custom policy (keeps 20% spare): LB_POLICY=policies.examples.headroom:Headroom"""
import math

from policies import Decision


class Headroom:
    name = "headroom"

    def __init__(self, settings):
        self.target = 0.8 * settings.get("target_inflight", 10)

    def initial_state(self):
        return None

    def decide(self, snapshot, state):
        load = snapshot.panic_inflight
        if load is None:
            return Decision(snapshot.replicas, "holding: no data yet"), state
        want = math.ceil(load / self.target)
        return Decision(want, f"{load:.1f} in flight / {self.target:g} -> {want}"), state
