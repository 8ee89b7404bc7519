# SPDX-License-Identifier: MIT
"""The grpcio kubelet stand-in, in the guest: waits for `resource` to
register, checks its ListAndWatch list and an Allocate of `address`."""
import os
import sys

sys.path.insert(0, os.path.join(os.environ["HOSTDEVD_SRCDIR"], "test", "integration"))
from kubelet import Kubelet  # noqa: E402

kdir, resource, address, group = sys.argv[1:5]
k = Kubelet(kdir)
try:
    p = k.wait_registered(resource, timeout=30)
    devs = p.wait_devices(lambda d: any(x[0] == address for x in d), timeout=30)
    print("ListAndWatch:", devs)
    resp = p.allocate([address]).container_responses[0]
    env = dict(resp.envs)
    specs = [s.host_path for s in resp.devices]
    print("Allocate:", env, specs)
    assert address in list(env.values())[0].split(","), env
    assert list(env)[0].startswith("PCI_RESOURCE_"), env
    assert "/dev/vfio/vfio" in specs and f"/dev/vfio/{group}" in specs, specs
finally:
    k.stop()
