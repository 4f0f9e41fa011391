namespace ModelCompression.LowRank;

/// <summary>
/// Per-layer ranks under a total parameter budget, from the layers' spectra: starting at the smallest rank
/// everywhere, the step with the most kept energy per added parameter is taken, one rank step of one mode at a time
/// (a channel block for convolutions), until the budget is spent. Energies are shares of each layer's own (possibly whitened) total, so a step's value is the relative
/// (output) error it removes. When growing a layer past the point where its factors still save parameters, the
/// step offered instead is "keep it dense" — all its remaining energy for the rest of its parameters.
/// </summary>
internal static class RankAllocator
{
    /// <summary>Ranks per layer (null = keep the layer dense) whose parameters add up to at most <paramref name="budget"/> where possible.</summary>
    public static IReadOnlyList<int[]?> Allocate(IReadOnlyList<LayerFactorization> layers, long budget)
    {
        var ranks = new int[]?[layers.Count];
        var spent = 0L;
        for (var l = 0; l < layers.Count; l++)
        {
            var start = layers[l].Clamp(Enumerable.Repeat(1, layers[l].FullRanks.Length).ToArray());
            ranks[l] = layers[l].Saves(start) ? start : null;
            spent += ranks[l] is { } r ? layers[l].Parameters(r) : layers[l].DenseParameters;
        }

        // Max-heap on value per parameter; ties go to the earlier layer so the outcome never depends on heap order.
        // Each live layer has exactly one entry: its best step when it was offered.
        var queue = new PriorityQueue<int, (double NegativeValue, int Layer)>();
        void Offer(int l)
        {
            if (BestStep(layers[l], ranks[l], budget - spent) is { } step) queue.Enqueue(l, (-step.ValuePerParameter, l));
        }
        for (var l = 0; l < layers.Count; l++) Offer(l);
        while (queue.TryDequeue(out var l, out var priority))
        {
            // The budget may have shrunk since the step was offered, leaving a worse one: queue that one instead.
            if (BestStep(layers[l], ranks[l], budget - spent) is not { } step) continue;
            if (step.ValuePerParameter < -priority.NegativeValue)
            {
                queue.Enqueue(l, (-step.ValuePerParameter, l));
                continue;
            }
            spent += step.Cost;
            ranks[l] = step.Ranks;
            Offer(l);
        }
        return ranks;
    }

    /// <summary>Moving to <see cref="Ranks"/> (null = dense) adds <see cref="Cost"/> parameters and keeps <see cref="Gain"/> more of the layer's energy.</summary>
    private readonly record struct Step(int[]? Ranks, long Cost, double Gain)
    {
        public double ValuePerParameter => Gain / Cost;
    }

    /// <summary>The most valuable affordable step from <paramref name="ranks"/>: one more rank in one mode, or going dense.</summary>
    private static Step? BestStep(LayerFactorization layer, int[]? ranks, long available)
    {
        if (ranks is null) return null;
        var energies = layer.ModeEnergies;
        var current = layer.Parameters(ranks);
        Step? best = null;
        for (var mode = 0; mode < ranks.Length; mode++)
        {
            var grown = (int[])ranks.Clone();
            grown[mode] += layer.RankStep(mode);
            grown = layer.Clamp(grown);
            if (SameRanks(grown, ranks)) continue;
            Step step;
            if (layer.Saves(grown))
            {
                var gain = 0.0;
                for (var m = 0; m < grown.Length; m++)
                    for (var r = ranks[m]; r < grown[m] && r < energies[m].Length; r++) gain += energies[m][r];
                step = new Step(grown, layer.Parameters(grown) - current, gain);
            }
            else
            {
                var remaining = 0.0;
                for (var m = 0; m < ranks.Length; m++) remaining += Math.Max(0, 1 - energies[m].Take(ranks[m]).Sum());
                step = new Step(null, layer.DenseParameters - current, remaining);
            }
            if (step.Cost <= 0 || step.Cost > available) continue;
            if (best is null || step.ValuePerParameter > best.Value.ValuePerParameter) best = step;
        }
        return best;
    }

    private static bool SameRanks(int[] a, int[] b) => a.AsSpan().SequenceEqual(b);
}
