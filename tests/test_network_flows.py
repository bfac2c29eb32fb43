"""The flow network by hand: max-min rates, exact finish times, collective algorithms, topology.

One message of ``b`` bytes on the flow network: the sender spends ``message_overhead`` posting it
(``k`` messages issued at once cost ``k`` overheads, then all start), its bytes flow at the max-min
fair rate of the moment, and it arrives ``latency`` after its last byte left. Uncontended:
``o + b / bw + lat``.
"""

import numpy as np
import pytest
from conftest import hand_plan, make_cluster, make_pcie
from hypothesis import given, settings
from hypothesis import strategies as st

from secmoe_sim.engine import run_plan
from secmoe_sim.engine.network import maxmin
from secmoe_sim.engine.network.finish_calendar import FinishCalendar
from secmoe_sim.engine.network.flows import FlowNetwork
from secmoe_sim.engine.network.maxmin import max_min_rates
from secmoe_sim.engine.ordering import lexicographic_order
from secmoe_sim.plan.communication import one_message_s
from secmoe_sim.plan.steps import AllGather, AllReduce, AllToAll, Message, ReduceScatter
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.hardware import InterNodeFabric, PCIeFabric
from secmoe_sim.spec.network import NetworkOptions

BANDWIDTH = 1e9
LATENCY = 1e-6
OVERHEAD = 2e-6
INF = np.inf


def transfers_of(run):
    return run.timeline[run.timeline["kind"] == "transfer"].set_index(["src", "dst"])


def all_to_all(gpus, messages):
    return AllToAll.of("a2a", "a2a", tuple(gpus), tuple(Message(s, d, size) for s, d, size in messages))


# --- the solver ------------------------------------------------------------------------------


def test_two_flows_on_one_link_get_half_each():
    links = np.array([[0, 1], [0, 1]])  # both flows cross link 0; link 1 is the sentinel
    rates = max_min_rates(links, np.ones(2), np.array([10.0, INF]))
    assert rates.tolist() == [5.0, 5.0]


def test_three_flows_two_bottlenecks_textbook():
    """Link 0 (capacity 1) carries A and B; link 1 (capacity 3) carries B and C.

    Link 0 saturates first at 1/2: A = B = 1/2. Link 1 then has 3 - 1/2 for C alone: C = 5/2.
    """
    links = np.array([[0, 2], [0, 1], [1, 2]])
    rates = max_min_rates(links, np.ones(3), np.array([1.0, 3.0, INF]))
    assert rates == pytest.approx([0.5, 0.5, 2.5], rel=1e-15)


def test_chain_of_bottlenecks():
    """Three links in a chain with different capacities: the rates rise along the chain."""
    links = np.array([[0, 3], [0, 1], [1, 2], [2, 3]])  # A on 0; B on 0,1; C on 1,2; D on 2
    rates = max_min_rates(links, np.ones(4), np.array([2.0, 5.0, 10.0, INF]))
    assert rates == pytest.approx([1.0, 1.0, 4.0, 6.0], rel=1e-15)


def test_weight_counts_as_identical_flows():
    grouped = max_min_rates(np.array([[0, 1], [0, 1]]), np.array([3.0, 1.0]), np.array([8.0, INF]))
    separate = max_min_rates(np.array([[0, 1]] * 4), np.ones(4), np.array([8.0, INF]))
    assert grouped.tolist() == [2.0, 2.0] and separate.tolist() == [2.0] * 4


@st.composite
def flow_problems(draw):
    """Random flows over a few links (capacities with ties and zeros, rows padded with the sentinel, a link twice in
    a row, weights above one); each flow crosses at least one link."""
    num_links, num_flows, width = draw(st.integers(1, 30)), draw(st.integers(1, 200)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    links = rng.integers(0, num_links, (num_flows, width))
    padded = rng.random((num_flows, width)) < 0.2
    padded[:, 0] = False  # every flow crosses a link
    links[padded] = num_links  # the sentinel
    capacity = np.append(rng.integers(0, 6, num_links) * draw(st.sampled_from([1.0, 0.37, 1e9])), INF)
    return links, rng.integers(1, 4, num_flows).astype(float), capacity


@settings(max_examples=200, deadline=None)
@given(flow_problems())
def test_link_by_link_tail_gives_the_passes_rates(problem):
    """The heap that finishes a long tail link by link reaches the rates the passes reach, to float rounding."""
    links, weights, capacity = problem
    passes_only = max_min_rates(links, weights, capacity)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(maxmin, "TAIL_MIN_FLOWS", 0)
        patched.setattr(maxmin, "TAIL_FRACTION", 2.0)  # after the first pass that does not finish, always
        with_tail = max_min_rates(links, weights, capacity)
    from_start = maxmin._fill_link_by_link(
        links,
        weights,
        np.maximum(capacity, 0.0),
        np.bincount(links.ravel(), np.repeat(weights, links.shape[1]), capacity.shape[0]),
    )
    for rates in (with_tail, from_start):
        assert np.isinf(rates).tolist() == np.isinf(passes_only).tolist()
        finite = np.isfinite(passes_only)
        assert rates[finite] == pytest.approx(passes_only[finite], rel=1e-12, abs=1e-300)


def test_the_tail_is_taken_on_a_long_chain(monkeypatch):
    """A chain of links with rising capacities frees a link or two per pass: after the first, the heap finishes it."""
    tails = []
    original = maxmin._fill_link_by_link
    monkeypatch.setattr(maxmin, "TAIL_MIN_FLOWS", 10)
    monkeypatch.setattr(maxmin, "_fill_link_by_link", lambda *a: tails.append(a[0].shape[0]) or original(*a))
    chain = 40
    links = np.array([[i, i + 1] for i in range(chain)] + [[chain, chain + 1]])  # flow i on links i and i + 1
    capacity = np.append(np.arange(1.0, chain + 2.0), INF)  # link ``chain + 1``: the sentinel
    rates = max_min_rates(links, np.ones(chain + 1), capacity)
    monkeypatch.setattr(maxmin, "TAIL_MIN_FLOWS", 10**9)
    assert tails and rates == pytest.approx(max_min_rates(links, np.ones(chain + 1), capacity), rel=1e-12)


# --- the calendar ----------------------------------------------------------------------------


def test_calendar_pops_in_order_and_forgets_replaced_instants():
    calendar = FinishCalendar(8)
    calendar.set(np.arange(5), np.array([5.0, 1.0, 3.0, 2.0, 4.0]))
    assert calendar.next_at() == 1.0
    calendar.set(np.array([2]), np.array([0.5]))  # slot 2 now finishes first; its old instant is gone
    assert sorted(calendar.pop_until(1.0).tolist()) == [1, 2]
    calendar.set(np.array([4]), np.array([INF]))
    assert calendar.next_at() == 2.0
    assert sorted(calendar.pop_until(10.0).tolist()) == [0, 3]
    assert calendar.next_at() == INF


def test_calendar_rebuilds_its_prefix_past_the_bound():
    calendar = FinishCalendar(4096)
    instants = np.random.default_rng(1).permutation(4096).astype(float)
    calendar.set(np.arange(4096), instants)
    popped = [calendar.pop_until(float(t)).tolist() for t in range(4096)]
    assert [slots for slots in popped] == [[int(np.flatnonzero(instants == t)[0])] for t in range(4096)]


# A calendar's work: (slots, instants) to set, or an instant to pop until. Instants on a coarse grid, so that
# several slots often finish together and rescheduled slots often move before the prefix's bound.
CALENDAR_STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.lists(st.integers(0, 299), min_size=1, max_size=60, unique=True),
            st.lists(st.one_of(st.integers(0, 50).map(float), st.just(INF)), min_size=60, max_size=60),
        ),
        st.integers(0, 50).map(float),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(CALENDAR_STEPS)
def test_calendar_pops_what_a_plain_table_says(steps):
    """Every path of ``pop_until`` (one flow due at the prefix's front, several, the heap, merges and rebuilds)
    returns exactly the slots whose current instant has come, and ``next_at`` the soonest current instant."""
    calendar = FinishCalendar(300)
    instants = np.full(300, INF)
    for step in steps:
        if isinstance(step, tuple):
            slots, chosen = np.array(step[0]), np.array(step[1][: len(step[0])])
            calendar.set(slots, chosen)
            instants[slots] = chosen
        else:
            due = np.flatnonzero(instants <= step)
            assert sorted(calendar.pop_until(step).tolist()) == due.tolist()
            instants[due] = INF
        assert calendar.next_at() == instants.min()


@given(st.lists(st.tuples(st.integers(0, 2**12), st.integers(0, 9), st.integers(0, 2**12)), max_size=50))
def test_an_exchange_orders_its_messages_as_lexsort_does(rows):
    """The combined-key sort gives lexsort's order, ties in their original order."""
    keys = [np.array([row[column] for row in rows], dtype=np.int64) for column in range(3)]
    assert lexicographic_order(*keys).tolist() == np.lexsort(keys[::-1]).tolist()


def test_keys_too_wide_for_one_combined_key_still_sort_in_order():
    """Keys of 2**22, 2**21 and 2**21 values would overflow a 64-bit combined key (2**64): still lexsort's order."""
    widest, wide = 2**22 - 1, 2**21 - 1
    keys = [np.array([widest, 0, widest, 1]), np.array([0, wide, 5, 5]), np.array([wide, wide, 0, 7])]
    assert lexicographic_order(*keys).tolist() == np.lexsort(keys[::-1]).tolist() == [1, 3, 0, 2]


# --- timelines on the flow network -----------------------------------------------------------


def test_one_message_uncontended():
    cluster = make_cluster(gpus_per_node=2, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    run = run_plan(hand_plan(cluster, [[all_to_all((0, 1), [(0, 1, 1e6)])]] * 2))
    row = transfers_of(run).loc[(0, 1)]
    assert (row.started_at, row.finished_at) == (0.0, pytest.approx(OVERHEAD + 1e6 / BANDWIDTH + LATENCY, rel=1e-12))


def test_two_flows_into_one_gpu_share_its_link_and_the_early_one_releases_its_share():
    """GPUs 0 and 2 send 1 MB and 3 MB to GPU 1: both flows start at o and share GPU 1's ingress
    at 0.5 GB/s. The 1 MB flow drains at o + 2 ms; the 3 MB flow then has 2 MB left at the full
    1 GB/s and drains at o + 4 ms. Each arrives one latency later."""
    cluster = make_cluster(gpus_per_node=3, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    run = run_plan(hand_plan(cluster, [[all_to_all((0, 1, 2), [(0, 1, 1e6), (2, 1, 3e6)])]] * 3))
    rows = transfers_of(run)
    assert rows.loc[(0, 1), "finished_at"] == pytest.approx(OVERHEAD + 2e-3 + LATENCY, rel=1e-12)
    assert rows.loc[(2, 1), "finished_at"] == pytest.approx(OVERHEAD + 4e-3 + LATENCY, rel=1e-12)
    assert max(run.finished_at) == pytest.approx(OVERHEAD + 4e-3 + LATENCY, rel=1e-12)


def test_three_flows_two_bottlenecks_on_a_pcie_tree():
    """PCIe, links 2 GB/s, host bridge 1.5 GB/s, switches of two GPUs (0,1 | 2,3 | 4,5).

    A: 0 -> 1 (own switch: GPU 0 up, GPU 1 down); B: 2 -> 1 and C: 4 -> 0 cross the bridge.
    The bridge is the first bottleneck: B = C = 0.75 GB/s. GPU 1's down link is the second: A gets
    2 - 0.75 = 1.25 GB/s. With 1.5 MB each, A drains at o + 1.2 ms; B and C keep 0.75 GB/s (the
    bridge still binds) and drain at o + 2 ms.
    """
    fabric = make_pcie(peer_to_peer=True, link=2e9, bridge=1.5e9, latency=LATENCY, gpus_per_switch=2)
    cluster = make_cluster(gpus_per_node=6, overhead=OVERHEAD, fabric=fabric)
    rates_seen = []
    run = run_plan(
        hand_plan(cluster, [[all_to_all(range(6), [(0, 1, 1.5e6), (2, 1, 1.5e6), (4, 0, 1.5e6)])]] * 6),
        observer=lambda now, table: rates_seen.append(sorted(table.rate_bytes_per_s[table.active_slots()].tolist())),
    )
    assert rates_seen[0] == pytest.approx([0.75e9, 0.75e9, 1.25e9], rel=1e-12)
    rows = transfers_of(run)
    assert rows.loc[(0, 1), "finished_at"] == pytest.approx(OVERHEAD + 1.2e-3 + LATENCY, rel=1e-12)
    assert rows.loc[(2, 1), "finished_at"] == pytest.approx(OVERHEAD + 2e-3 + LATENCY, rel=1e-12)
    assert rows.loc[(4, 0), "finished_at"] == pytest.approx(OVERHEAD + 2e-3 + LATENCY, rel=1e-12)


def test_messages_issued_together_are_posted_as_one_group():
    """GPU 0 sends 1 MB to 1 and to 2 at once: posting both costs 2o, then both flows start and
    share GPU 0's egress at 0.5 GB/s: both drain at 2o + 2 ms and arrive a latency later. Each row
    starts when posting starts."""
    cluster = make_cluster(gpus_per_node=3, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    run = run_plan(hand_plan(cluster, [[all_to_all((0, 1, 2), [(0, 1, 1e6), (0, 2, 1e6)])]] * 3))
    rows = transfers_of(run)
    assert rows["started_at"].tolist() == [0.0, 0.0]
    assert rows["finished_at"].tolist() == pytest.approx([2 * OVERHEAD + 2e-3 + LATENCY] * 2, rel=1e-12)


def test_uniform_direct_all_to_all_shares_every_link_equally():
    """Uniform 1 MB all-to-all among 4 GPUs on a switch: each GPU posts 3 messages (3o), then every
    egress and ingress carries 3 flows at 1/3 GB/s each: all drain at 3o + 3 ms. The port model
    serialises them: 3 (o + 1 ms + lat)."""
    cluster = make_cluster(gpus_per_node=4, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    messages = [(s, d, 1e6) for s in range(4) for d in range(4) if s != d]
    run = run_plan(hand_plan(cluster, [[all_to_all(range(4), messages)]] * 4))
    assert max(run.finished_at) == pytest.approx(3 * OVERHEAD + 3e-3 + LATENCY, rel=1e-12)


def test_pairwise_all_to_all_takes_g_minus_1_rounds():
    """Round r: GPU i sends to i + r; every round is a permutation on disjoint links, so it takes
    one uncontended message time and starts when the previous round has ended."""
    gpus = 5
    cluster = make_cluster(gpus_per_node=gpus, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    messages = [(s, d, 1e6) for s in range(gpus) for d in range(gpus) if s != d]
    run = run_plan(
        hand_plan(cluster, [[all_to_all(range(gpus), messages)]] * gpus), network=NetworkOptions(all_to_all="pairwise")
    )
    one = OVERHEAD + 1e6 / BANDWIDTH + LATENCY
    assert max(run.finished_at) == pytest.approx((gpus - 1) * one, rel=1e-12)
    rows = run.timeline[run.timeline["kind"] == "transfer"]
    rounds = ((rows["dst"] - rows["src"]) % gpus).to_numpy()
    assert rows["started_at"].to_numpy() == pytest.approx((rounds - 1) * one, rel=1e-12, abs=1e-15)
    assert sorted(set(rounds.tolist())) == list(range(1, gpus))


def test_hierarchical_all_to_all_crosses_nodes_once_per_node_pair():
    """Three nodes of four GPUs, a random byte matrix (some pairs empty): the bytes between two nodes
    equal the matrix block, carried by one message per (node pair, destination local rank), from the
    sender's GPU of that local rank; every GPU ends with exactly what was addressed to it."""
    nodes, per_node = 3, 4
    gpus = nodes * per_node
    rng = np.random.default_rng(7)
    matrix = rng.integers(0, 5, size=(gpus, gpus)) * 1e5
    np.fill_diagonal(matrix, 0)
    cluster = make_cluster(gpus_per_node=per_node, nodes=nodes, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    exchange = AllToAll.from_matrix("a2a", "a2a", tuple(range(gpus)), matrix)
    run = run_plan(hand_plan(cluster, [[exchange]] * gpus), network=NetworkOptions(all_to_all="hierarchical"))
    rows = run.timeline[run.timeline["kind"] == "transfer"]
    src_node, dst_node = rows["src"] // per_node, rows["dst"] // per_node
    crossing = rows[src_node != dst_node]
    assert (crossing["src"] % per_node == crossing["dst"] % per_node).all()
    assert not crossing.duplicated(["src", "dst"]).any()
    for a in range(nodes):
        for b in range(nodes):
            if a != b:
                block = matrix[a * per_node : (a + 1) * per_node, b * per_node : (b + 1) * per_node].sum()
                between = crossing[(crossing["src"] // per_node == a) & (crossing["dst"] // per_node == b)]["bytes"].sum()
                assert between == pytest.approx(block, rel=1e-12)
    received = rows.groupby("dst")["bytes"].sum().reindex(range(gpus), fill_value=0.0).to_numpy()
    sent = rows.groupby("src")["bytes"].sum().reindex(range(gpus), fill_value=0.0).to_numpy()
    assert received - sent == pytest.approx(matrix.sum(axis=0) - matrix.sum(axis=1), abs=1e-6)


def test_hierarchical_needs_fewer_messages_per_gpu():
    nodes, per_node = 4, 4
    gpus = nodes * per_node
    cluster = make_cluster(gpus_per_node=per_node, nodes=nodes, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    messages = [(s, d, 1e3) for s in range(gpus) for d in range(gpus) if s != d]
    run = run_plan(
        hand_plan(cluster, [[all_to_all(range(gpus), messages)]] * gpus), network=NetworkOptions(all_to_all="hierarchical")
    )
    rows = run.timeline[run.timeline["kind"] == "transfer"]
    assert rows.groupby("src").size().max() == (per_node - 1) + (nodes - 1)


@pytest.mark.parametrize("model", ["flows", "ports"])
@pytest.mark.parametrize("algorithm", ["direct", "pairwise", "hierarchical"])
def test_every_algorithm_runs_on_both_network_models(model, algorithm):
    """Two nodes of three GPUs, a random all-to-all-v and its transpose: every GPU ends with what was
    addressed to it, on the flow and on the port network (whose fixed port order must not deadlock)."""
    gpus = 6
    rng = np.random.default_rng(3)
    matrix = rng.integers(0, 3, size=(gpus, gpus)) * 1e5
    np.fill_diagonal(matrix, 0)
    cluster = make_cluster(gpus_per_node=3, nodes=2, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    exchange = AllToAll.from_matrix("a2a", "a2a", tuple(range(gpus)), matrix)
    network = NetworkOptions(model=model, all_to_all=algorithm)
    run = run_plan(hand_plan(cluster, [[exchange, exchange.transposed()]] * gpus), network=network)
    rows = run.timeline[(run.timeline["kind"] == "transfer") & (run.timeline["label"] == "a2a")]
    received = rows.groupby("dst")["bytes"].sum().reindex(range(gpus), fill_value=0.0).to_numpy()
    sent = rows.groupby("src")["bytes"].sum().reindex(range(gpus), fill_value=0.0).to_numpy()
    assert received - sent == pytest.approx(matrix.sum(axis=0) - matrix.sum(axis=1), abs=1e-6)
    assert np.isfinite(max(run.finished_at))


def test_ring_collectives_take_their_steps():
    cluster = make_cluster(gpus_per_node=4, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    step = OVERHEAD + 1e6 / BANDWIDTH + LATENCY  # a 4 MB buffer moves in 1 MB chunks
    for collective, steps in [
        (AllReduce("ar", "ar", (0, 1, 2, 3), 4e6), 6),
        (AllGather("ag", "ag", (0, 1, 2, 3), 4e6), 3),
        (ReduceScatter("rs", "rs", (0, 1, 2, 3), 4e6), 3),
    ]:
        run = run_plan(hand_plan(cluster, [[collective]] * 4))
        assert max(run.finished_at) == pytest.approx(steps * step, rel=1e-12), collective.name
        assert len(run.timeline[run.timeline["kind"] == "transfer"]) == 4 * steps


def test_staged_pcie_message_is_two_stages():
    fabric = make_pcie(peer_to_peer=False, link=2e9, bridge=1e9, latency=LATENCY)
    cluster = make_cluster(gpus_per_node=2, overhead=OVERHEAD, fabric=fabric)
    run = run_plan(hand_plan(cluster, [[all_to_all((0, 1), [(0, 1, 1e6)])]] * 2))
    assert max(run.finished_at) == pytest.approx(OVERHEAD + 2 * (LATENCY + 1e6 / 1e9), rel=1e-12)
    assert max(run.finished_at) == pytest.approx(
        one_message_s(cluster.stack_settings().default, Topology(cluster), 0, 1, 1e6), rel=1e-12
    )


def test_identical_flows_are_merged_without_changing_times():
    """Two 1 MB chunks from 0 to 1 issued at once start together on the same links: one flow of
    weight 2, each chunk at 0.5 GB/s, both drain at 2o + 2 ms."""
    cluster = make_cluster(gpus_per_node=2, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    run = run_plan(hand_plan(cluster, [[all_to_all((0, 1), [(0, 1, 1e6), (0, 1, 1e6)])]] * 2))
    assert run.network_statistics["flows"] == 1
    assert max(run.finished_at) == pytest.approx(2 * OVERHEAD + 2e-3 + LATENCY, rel=1e-12)


def test_zero_byte_message_costs_overhead_and_latency():
    cluster = make_cluster(gpus_per_node=2, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    run = run_plan(hand_plan(cluster, [[all_to_all((0, 1), [(0, 1, 0.0)])]] * 2))
    assert max(run.finished_at) == pytest.approx(OVERHEAD + LATENCY, rel=1e-12)


def test_batched_mode_with_zero_tolerance_is_exact():
    cluster = make_cluster(gpus_per_node=4, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    messages = [(s, d, 1e5 * (1 + s + 2 * d)) for s in range(4) for d in range(4) if s != d]
    plan = hand_plan(cluster, [[all_to_all(range(4), messages)]] * 4)
    exact = run_plan(plan, network=NetworkOptions(mode="exact"))
    batched = run_plan(plan, network=NetworkOptions(mode="batched", tolerance=0.0))
    assert exact.timeline.equals(batched.timeline)


def test_one_message_instants_in_scalar_steps_give_the_array_path_timeline(monkeypatch):
    """An instant at which one message's last byte leaves is delivered in scalar steps; the array path that
    handles every other instant gives the same timeline to the last bit, in both modes."""
    cluster = make_cluster(gpus_per_node=8, bandwidth=BANDWIDTH, latency=0.0, overhead=0.0)
    rng = np.random.default_rng(3)
    messages = [(s, d, float(rng.integers(1, 50)) * 1e4) for s in range(8) for d in range(8) if s != d]
    plan = hand_plan(cluster, [[all_to_all(range(8), messages)]] * 8)
    for network in (NetworkOptions(mode="exact"), NetworkOptions(mode="batched", tolerance=0.2)):
        scalar = run_plan(plan, network=network)
        with monkeypatch.context() as patched:
            patched.setattr(FlowNetwork, "_delivered_alone", lambda self, message, now: False)
            arrays = run_plan(plan, network=network)
        assert scalar.timeline.equals(arrays.timeline)
        assert scalar.finished_at == arrays.finished_at


# --- topology --------------------------------------------------------------------------------


def names(topology, stages):
    return [[topology.names[link] for link in stage.links] for stage in stages]


def test_nvswitch_and_nic_routes():
    nic = InterNodeFabric(nic_bandwidth_per_direction=50e9, latency=2e-6, gpu_nic_pcie_bandwidth_per_direction=64e9)
    cluster = make_cluster(gpus_per_node=2, nodes=2).model_copy(update={"inter_node": nic})
    topology = Topology(cluster)
    assert names(topology, topology.route(0, 1)) == [["g0.nvlink.up", "g1.nvlink.down"]]
    route = topology.route(0, 3)
    assert names(topology, route) == [["g0.nic_pcie.up", "g0.nic.out", "g3.nic.in", "g3.nic_pcie.down"]]
    assert (route[0].latency_s, route[0].bandwidth_bytes_per_s) == (2e-6, 50e9)


def test_pcie_routes_share_the_host_bridge_and_cross_sockets():
    fabric = PCIeFabric(
        kind="pcie",
        link_bandwidth_per_direction=2e9,
        host_bridge_bandwidth_per_direction=1e9,
        latency=1e-6,
        peer_to_peer=True,
        gpus_per_switch=2,
        sockets=2,
        inter_socket_bandwidth_per_direction=0.5e9,
    )
    topology = Topology(make_cluster(gpus_per_node=8, fabric=fabric))
    assert names(topology, topology.route(0, 1)) == [["g0.pcie.up", "g1.pcie.down"]]
    assert names(topology, topology.route(0, 2)) == [["g0.pcie.up", "n0.s0.bridge.up", "n0.s0.bridge.down", "g2.pcie.down"]]
    cross = topology.route(1, 6)
    assert names(topology, cross) == [
        ["g1.pcie.up", "n0.s0.bridge.up", "n0.inter_socket.s0->s1", "n0.s1.bridge.down", "g6.pcie.down"]
    ]
    assert cross[0].bandwidth_bytes_per_s == 0.5e9


def test_staged_pcie_between_nodes_goes_through_both_hosts():
    fabric = make_pcie(peer_to_peer=False, gpus_per_switch=1)
    cluster = make_cluster(gpus_per_node=2, nodes=2, fabric=fabric)
    topology = Topology(cluster)
    assert names(topology, topology.route(0, 3)) == [
        ["g0.pcie.up", "n0.s0.bridge.up"],
        ["n0.s0.bridge.down", "g0.nic.out", "g3.nic.in", "n1.s0.bridge.up"],
        ["n1.s0.bridge.down", "g3.pcie.down"],
    ]
