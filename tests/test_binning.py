import numpy as np
import pytest

from xfads_cli.data.binning import bin_edges, bin_spikes, observed_bins, resample, window_starts


def brute_force(spike_times, edges):
    counts = np.zeros((edges.shape[0], edges.shape[1] - 1, len(spike_times)))
    for j, times in enumerate(spike_times):
        for t in times:
            for i in range(edges.shape[0]):
                for b in range(edges.shape[1] - 1):
                    if edges[i, b] <= t < edges[i, b + 1]:
                        counts[i, b, j] += 1
    return counts


def test_counts_match_brute_force_on_unsorted_spikes():
    rng = np.random.default_rng(0)
    spikes = [rng.permutation(rng.uniform(0, 10, size=rng.integers(0, 80))) for _ in range(5)]
    edges = bin_edges(np.array([0.0, 2.5, 7.13]), n_bins=30, bin_s=0.05)
    # Put spikes exactly on edges too: they belong to the bin that starts there (half-open bins).
    spikes[0] = np.concatenate([spikes[0], edges[0, [0, 3, 30]], edges[2, [5]]])
    np.testing.assert_array_equal(bin_spikes(spikes, edges), brute_force(spikes, edges))


def test_edge_spike_belongs_to_later_bin():
    edges = bin_edges(np.array([0.0]), n_bins=2, bin_s=1.0)
    counts = bin_spikes([np.array([0.0, 1.0, 2.0])], edges)
    assert counts[0, :, 0].tolist() == [1.0, 1.0]  # 2.0 is the right edge of the window: excluded


def test_observed_bins():
    edges = bin_edges(np.array([0.0]), n_bins=5, bin_s=1.0)
    mask = observed_bins(np.array([[0.0, 2.0], [3.0, 4.5]]), edges)
    assert mask[0].tolist() == [True, True, False, True, False]
    assert observed_bins(None, edges).all()


def test_window_starts():
    np.testing.assert_allclose(window_starts(0.0, 3.5, 1.0), [0.0, 1.0, 2.0])
    np.testing.assert_allclose(window_starts(0.0, 3.0, 1.0, overlap_s=0.5), [0.0, 0.5, 1.0, 1.5, 2.0])
    with pytest.raises(ValueError):
        window_starts(0.0, 3.0, 1.0, overlap_s=1.0)


def test_resample_means_inside_bins_and_interpolates_slow_series():
    edges = bin_edges(np.array([0.0]), n_bins=4, bin_s=0.1)
    fast_t = np.arange(0, 0.4, 0.01) + 0.005
    out = resample(fast_t, np.stack([fast_t, 2 * fast_t], 1), edges)
    np.testing.assert_allclose(out[0, :, 0], [0.05, 0.15, 0.25, 0.35], atol=1e-6)
    np.testing.assert_allclose(out[0, :, 1], 2 * out[0, :, 0], atol=1e-6)
    slow = resample(np.array([-1.0, 1.0]), np.array([-10.0, 10.0]), edges)
    np.testing.assert_allclose(slow[0, :, 0], [0.5, 1.5, 2.5, 3.5], atol=1e-5)
    outside = resample(np.array([1.0, 2.0]), np.array([0.0, 1.0]), edges)
    assert np.isnan(outside).all()
