# SPDX-License-Identifier: MIT
"""A state.json written before the IOMMU-group engine had owners (claim
records with their resource name and from_config in the top-level "claims"
array) is read and carried over: the engine keeps each group under owner
"pci", the pci module folds the rest into its own section, and the claim
comes back as it was: listed, offered under its name, released."""

import json
import os

import hdtest
from hdtest import wait_until
from test_claims import claims, host, idle, release  # noqa: F401
from test_claims_recorded import record, write_state


def state_of(d):
    with open(os.path.join(d.state, "state.json")) as f:
        return json.load(f)


def test_old_state_json_is_carried_over(host):
    d, k = host()
    d.check_clean_exit()
    old = record("0000:01:10.2", 112, [("0000:01:10.2", "ixgbevf")])
    old.update(resource_name="example.com/legacy", from_config=True, allocations=3)
    assert "owner" not in old
    write_state(d, [old])
    d.start()
    wait_until(lambda: k.driver_of("0000:01:10.2") == "vfio-pci", timeout=15,
               what="the recorded claim to be applied again")
    idle(d)
    cl = claims(d)
    assert len(cl) == 1, cl
    assert cl[0]["address"] == "0000:01:10.2" and cl[0]["state"] == "claimed"
    assert cl[0]["resource_name"] == "example.com/legacy" and cl[0]["from_config"] is True, cl
    assert cl[0]["owner"] == "pci" and cl[0]["allocations"] == 3, cl
    wait_until(lambda: any(r["name"] == "example.com/legacy" and
                           [x["id"] for x in r["devices"]] == ["0000:01:10.2"]
                           for r in d.call("resources.list")),
               what="the claim offered under its recorded name")

    # The new layout on disk: the group in the engine's records (with its
    # owner, without the pci module's fields), those in the module's section.
    state = state_of(d)
    assert [(c["address"], c["owner"], c["state"]) for c in state["claims"]] == \
        [("0000:01:10.2", "pci", "claimed")]
    assert "resource_name" not in state["claims"][0] and "from_config" not in state["claims"][0]
    assert state["modules"]["pci"] == {"claims": [{"address": "0000:01:10.2",
                                                   "resource_name": "example.com/legacy",
                                                   "from_config": True}]}

    # It reads back the same after a restart.
    d.check_clean_exit()
    d.start()
    idle(d)
    cl = claims(d)
    assert [(c["address"], c["resource_name"], c["from_config"]) for c in cl] == \
        [("0000:01:10.2", "example.com/legacy", True)]
    assert d.log_text().count("carried over to module pci") == 1, "only the first start carried it"

    res = release(d, "0000:01:10.2")
    assert res["state"] == "released" and res["resource_name"] == "example.com/legacy"
    assert k.driver_of("0000:01:10.2") == "ixgbevf"
    assert claims(d) == []
    state = state_of(d)
    assert state["claims"] == [] and state["modules"]["pci"] == {"claims": []}


def test_group_of_an_absent_owner_is_kept_and_listed(host):
    """A group the engine holds for a module that is not loaded (here
    "sriov") is applied and listed as the engine sees it; pci.claim of it
    is refused as busy, and pci.release does not touch it."""
    d, k = host()
    d.check_clean_exit()
    rec = record("0000:01:10.2", 112, [("0000:01:10.2", "ixgbevf")])
    rec["owner"] = "sriov"
    del rec["resource_name"], rec["from_config"]
    write_state(d, [rec])
    d.start()
    wait_until(lambda: k.driver_of("0000:01:10.2") == "vfio-pci", timeout=15,
               what="the group to be bound for its owner")
    idle(d)
    cl = claims(d)
    assert [(c["address"], c["owner"], c["state"]) for c in cl] == [("0000:01:10.2", "sriov", "claimed")]
    c = d.client()
    resp = c.request("pci.claim", {"address": "0000:01:10.2"})
    assert resp["error"]["code"] == -32005 and "held by module sriov" in resp["error"]["message"], resp
    resp = c.request("pci.release", {"address": "0000:01:10.2"})
    assert resp["error"]["code"] == -32004, resp
    c.close()
    assert k.driver_of("0000:01:10.2") == "vfio-pci"
    assert state_of(d)["claims"][0]["owner"] == "sriov"
