"""Naming the node a multi-node cell lost (bench/sweep/nodes.py), and the link groups a
multi-node commbench measures apart (bench/worker/commbench.py)."""
import socket

from bench.sweep import nodes
from bench.worker.commbench import link_groups

SRUN_LOG = """[rank0]: RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.231.7.12]:41234
srun: error: n2: task 1: Killed
srun: Terminating StepId=12.0
srun: error: n1: task 0: Terminated
"""


def test_srun_s_first_report_is_the_cause_and_the_peers_are_the_consequence():
    said = nodes.from_srun(SRUN_LOG)
    assert list(said) == ["n2", "n1"]
    assert said["n2"] == "srun: its task Killed"
    assert nodes.from_srun("srun: error: Node failure on n3\n") == {
        "n3": "srun reported a node failure"}


def test_a_node_whose_slurmd_does_not_answer_is_lost_and_one_that_answers_is_not(monkeypatch):
    with socket.socket() as alive:
        alive.bind(("127.0.0.1", 0))
        alive.listen()
        port = alive.getsockname()[1]
        # 127.0.0.2 answers nothing on that port: the connection is refused.
        gone = nodes.unreachable(["127.0.0.1", "127.0.0.2"], port, timeout_s=1.0,
                                 address=lambda host: host)
        assert list(gone) == ["127.0.0.2"] and "refused" in gone["127.0.0.2"]
        # A name that does not resolve says nothing about the node.
        assert nodes.unreachable(["no-such-node.invalid"], port, address=lambda h: h) == {}
        monkeypatch.setattr(nodes, "slurmd_port", lambda: port)
        monkeypatch.setattr(nodes, "node_address", lambda host: host)
        # Every slurmd answers and srun names only tasks that exited: no node is lost (a rank
        # killed on a node that lives on is the rank's failure, named by the runner).
        assert nodes.lost_nodes(SRUN_LOG, ["127.0.0.1", "127.0.0.1"]) == {}
        assert nodes.lost_nodes("srun: error: Node failure on n2\n", ["127.0.0.1", "n2"]) == {
            "n2": "srun reported a node failure"}
        lost = nodes.lost_nodes(SRUN_LOG.replace("n2", "127.0.0.2"), ["127.0.0.1", "127.0.0.2"])
        assert list(lost) == ["127.0.0.2"] and lost["127.0.0.2"].endswith("srun: its task Killed")
        assert nodes.lost_nodes(SRUN_LOG, ["127.0.0.2"]) == {}  # one node: nothing to tell
    assert nodes.lost_sentence({"n2": "why"}) == "node n2 lost (why)"


def test_commbench_measures_each_link_apart_only_where_the_layout_has_both():
    assert link_groups(4, 2) == {"inter-node": [0, 2], "intra-node": [0, 1]}
    assert link_groups(6, 3) == {"inter-node": [0, 3], "intra-node": [0, 1, 2]}
    assert link_groups(2, 1) == {} and link_groups(4, 4) == {}
