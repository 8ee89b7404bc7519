# SPDX-License-Identifier: MIT
"""The fake libnvidia-ml.so.1 (test/fakenvml/fakenvml.c) seen from a test: its
state file (FAKE_NVML_STATE), read and changed under the library's lock, and
what happens to a GPU at a reboot or a reset."""

import fcntl
import json
import os

# What `nvidia-smi mig -lgip` reports (REFERENCE-MODULES A.7): hardware
# profile id -> name, instances. The fake's tables must say the same.
PROFILES = {
    "A100-40GB": {19: ("1g.5gb", 7), 20: ("1g.5gb+me", 1), 15: ("1g.10gb", 4),
                  14: ("2g.10gb", 3), 9: ("3g.20gb", 2), 5: ("4g.20gb", 1),
                  0: ("7g.40gb", 1)},
    "A100-80GB": {19: ("1g.10gb", 7), 20: ("1g.10gb+me", 1), 15: ("1g.20gb", 4),
                  14: ("2g.20gb", 3), 9: ("3g.40gb", 2), 5: ("4g.40gb", 1),
                  0: ("7g.80gb", 1)},
    "H100-80GB": {19: ("1g.10gb", 7), 20: ("1g.10gb+me", 1), 15: ("1g.20gb", 4),
                  14: ("2g.20gb", 3), 9: ("3g.40gb", 2), 5: ("4g.40gb", 1),
                  0: ("7g.80gb", 1)},
    "H200-141GB": {19: ("1g.18gb", 7), 20: ("1g.18gb+me", 1), 15: ("1g.35gb", 4),
                   14: ("2g.35gb", 3), 9: ("3g.71gb", 2), 5: ("4g.71gb", 1),
                   0: ("7g.141gb", 1)},
}
HOPPER = ("H100-80GB", "H200-141GB")
PCI_DEVICE = {"A100-40GB": 0x20f1, "A100-80GB": 0x20b5, "H100-80GB": 0x2330,
              "H200-141GB": 0x2335, "L40S": 0x26b9}


def library(builddir):
    return os.path.join(builddir, "test", "fakenvml", ".libs", "libnvidia-ml.so.1")


class FakeNvml:
    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            self._write({"driver_version": "550.90.07", "gpus": [], "calls": {}})

    def _write(self, state):
        tmp = self.path + ".tmp.py"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.rename(tmp, self.path)

    def read(self):
        with open(self.path + ".lock", "a+") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            with open(self.path) as f:
                return json.load(f)

    def update(self, fn):
        """fn(state) changes the state in place, under the library's lock."""
        with open(self.path + ".lock", "a+") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            with open(self.path) as f:
                state = json.load(f)
            fn(state)
            self._write(state)

    def add_gpu(self, bus_id, model, minor, mig=0, mode_change="reset", gis=None):
        def f(s):
            s["gpus"].append({"bus_id": bus_id, "model": model, "minor": minor,
                              "uuid": "GPU-%08x-1111-2222-3333-%012x" % (minor, PCI_DEVICE[model]),
                              "mig_current": mig, "mig_pending": mig,
                              "mode_change": mode_change, "gis": gis or [], "processes": []})
        self.update(f)

    def gpu(self, bus_id):
        return next(g for g in self.read()["gpus"] if g["bus_id"] == bus_id)

    def set_gpu(self, bus_id, **kw):
        def f(s):
            for g in s["gpus"]:
                if g["bus_id"] == bus_id:
                    g.update(kw)
        self.update(f)

    def set(self, **kw):
        self.update(lambda s: s.update(kw))

    def calls(self, name):
        return self.read().get("calls", {}).get(name, 0)

    def mutations(self):
        """Calls that change a GPU: none may happen for an idempotent apply."""
        c = self.read().get("calls", {})
        return {k: v for k, v in c.items() if k in (
            "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
            "nvmlGpuInstanceCreateComputeInstance", "nvmlGpuInstanceDestroy",
            "nvmlComputeInstanceDestroy", "nvmlDeviceSetMigMode")}

    def reboot(self):
        """Instances never survive a reboot; MIG mode does on Ampere (the
        pending mode takes effect) and does not from Hopper on."""
        def f(s):
            for g in s["gpus"]:
                g["gis"] = []
                g["processes"] = []
                if g["model"] in HOPPER:
                    g["mig_current"] = g["mig_pending"] = 0
                else:
                    g["mig_current"] = g["mig_pending"]
        self.update(f)

    def reset(self, bus_id):
        """nvidia-smi -r: the pending mode becomes current, instances go."""
        def f(s):
            for g in s["gpus"]:
                if g["bus_id"] == bus_id:
                    g["mig_current"] = g["mig_pending"]
                    g["gis"] = []
        self.update(f)

    def layout(self, bus_id):
        """[(profile id, start)] of the GPU's instances, each with its CIs."""
        return sorted((gi["profile_id"], gi["start"], len(gi["cis"]))
                      for gi in self.gpu(bus_id)["gis"])
