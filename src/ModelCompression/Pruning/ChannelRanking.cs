using ModelCompression.Calibration;
using ModelCompression.Numerics;
using ModelCompression.Onnx;

namespace ModelCompression.Pruning;

/// <summary>
/// Orders a group's channels from least to most useful, by one of the StructuredCriterion choices. The pass keeps
/// the tail of the order.
/// </summary>
internal static class ChannelRanking
{
    /// <summary>
    /// L1: the L1 norm of each channel's filter, summed over the group's sources (each source's norms divided by
    /// their mean first, so a residual group weighs its sources alike). Smallest first.
    /// </summary>
    public static double[] L1Scores(OnnxModel model, IReadOnlyList<Passes.WeightedLayer> sources, int channels)
    {
        var scores = new double[channels];
        foreach (var source in sources)
        {
            var w = source.ReadMatrix(model);
            var norms = new double[channels];
            for (var c = 0; c < channels; c++)
                for (var i = 0; i < source.InFeatures; i++) norms[c] += Math.Abs(w[c * source.InFeatures + i]);
            var mean = norms.Average();
            for (var c = 0; c < channels; c++) scores[c] += mean > 0 ? norms[c] / mean : 0;
        }
        return scores;
    }

    /// <summary>
    /// APoZ: channels ordered by the fraction of zeros where the sinks read them, most first (a channel that is
    /// mostly zero after its ReLU carries little); ties, such as groups without a ReLU, go by L1 score.
    /// </summary>
    public static int[] MostZerosFirst(double[] zeros, double[] l1)
    {
        var order = Enumerable.Range(0, zeros.Length).ToArray();
        Array.Sort(order, (a, b) => zeros[a] != zeros[b] ? zeros[b].CompareTo(zeros[a]) : l1[a] != l1[b] ? l1[a].CompareTo(l1[b]) : a.CompareTo(b));
        return order;
    }

    /// <summary>Channel indices ordered by ascending score (ties: lower index first).</summary>
    public static int[] Ascending(double[] scores)
    {
        var order = Enumerable.Range(0, scores.Length).ToArray();
        Array.Sort(order, (a, b) => scores[a] != scores[b] ? scores[a].CompareTo(scores[b]) : a.CompareTo(b));
        return order;
    }

    /// <summary>
    /// Reconstruction (ThiNet-style greedy selection with least-squares refit): starting from all channels, repeatedly
    /// removes the channel whose loss raises the sinks' best-fit reconstruction error the least, until
    /// <paramref name="remove"/> are gone. With P = M⁻¹ (M the dampened input moments) and β = P·XᵀY the least-squares
    /// weights, dropping the features B of a channel raises ‖Y − Ŷ‖² by tr(β_Bᵀ·(P_BB)⁻¹·β_B); P and β are then
    /// downdated in place. Each sink's error counts relative to its ‖Y‖². Returns the removed channels in order, or
    /// null when a sink's moments are singular or not finite.
    /// </summary>
    public static int[]? GreedyRemoval(IReadOnlyList<(GramStatistics Stats, int KernelSize)> sinks, int channels, int remove, double damping)
    {
        var states = sinks.Select(s => SinkState.Create(s.Stats, s.KernelSize, damping)).ToList();
        if (states.Any(s => s is null)) return null;
        var removed = new List<int>();
        var alive = Enumerable.Repeat(true, channels).ToArray();
        for (var step = 0; step < remove; step++)
        {
            var best = -1;
            var bestCost = double.PositiveInfinity;
            for (var c = 0; c < channels; c++)
            {
                if (!alive[c]) continue;
                var cost = 0.0;
                foreach (var s in states) cost += s!.RemovalCost(c);
                if (cost < bestCost) { bestCost = cost; best = c; }
            }
            foreach (var s in states) s!.Remove(best);
            alive[best] = false;
            removed.Add(best);
        }
        return removed.ToArray();
    }

    private sealed class SinkState
    {
        private readonly int _n;
        private readonly int _outputs;
        private readonly int _kernel;
        private readonly double[] _p;
        private readonly double[] _beta;
        private readonly double _scale;

        public static SinkState? Create(GramStatistics stats, int kernel, double damping)
        {
            var n = stats.Features + 1;
            var m = (double[])stats.Moments.Clone();
            var mean = 0.0;
            for (var i = 0; i < stats.Features; i++) mean += m[i * n + i];
            mean = Math.Max(mean / stats.Features, double.Epsilon);
            for (var i = 0; i < stats.Features; i++) m[i * n + i] += damping * mean;
            var identity = new double[n * n];
            for (var i = 0; i < n; i++) identity[i * n + i] = 1;
            var inverse = DenseMath.SolveSpd(m, n, identity, n);
            return inverse is null ? null : new SinkState(stats, kernel, inverse);
        }

        private SinkState(GramStatistics stats, int kernel, double[] inverse)
        {
            _kernel = kernel;
            _n = stats.Features + 1;
            _outputs = stats.Outputs;
            _p = inverse;
            _beta = new double[_n * _outputs];
            for (var i = 0; i < _n; i++)
                for (var k = 0; k < _n; k++)
                {
                    var pik = _p[i * _n + k];
                    if (pik != 0) DenseMath.Axpy(pik, stats.Cross.AsSpan(k * _outputs, _outputs), _beta.AsSpan(i * _outputs, _outputs));
                }
            _scale = stats.TargetSquaredNorm > 0 ? 1 / stats.TargetSquaredNorm : 1;
        }

        /// <summary>tr(β_Bᵀ (P_BB)⁻¹ β_B) / ‖Y‖² for the features of channel c.</summary>
        public double RemovalCost(int c)
        {
            var (inverse, b0) = BlockInverse(c);
            var cost = 0.0;
            for (var i = 0; i < _kernel; i++)
                for (var j = 0; j < _kernel; j++)
                {
                    var q = inverse[i * _kernel + j];
                    if (q != 0) cost += q * DenseMath.Dot(_beta.AsSpan((b0 + i) * _outputs, _outputs), _beta.AsSpan((b0 + j) * _outputs, _outputs));
                }
            return cost * _scale;
        }

        /// <summary>P ← P − P_:B (P_BB)⁻¹ P_B:, β ← β − P_:B (P_BB)⁻¹ β_B: the fit without channel c.</summary>
        public void Remove(int c)
        {
            var (inverse, b0) = BlockInverse(c);
            var k = _kernel;
            // G = P_:B · (P_BB)⁻¹, n × k.
            var g = new double[_n * k];
            for (var i = 0; i < _n; i++)
                for (var j = 0; j < k; j++)
                {
                    var sum = 0.0;
                    for (var t = 0; t < k; t++) sum += _p[i * _n + b0 + t] * inverse[t * k + j];
                    g[i * k + j] = sum;
                }
            var rowsB = new double[k * _n];
            var betaB = new double[k * _outputs];
            for (var t = 0; t < k; t++)
            {
                _p.AsSpan((b0 + t) * _n, _n).CopyTo(rowsB.AsSpan(t * _n, _n));
                _beta.AsSpan((b0 + t) * _outputs, _outputs).CopyTo(betaB.AsSpan(t * _outputs, _outputs));
            }
            for (var i = 0; i < _n; i++)
                for (var t = 0; t < k; t++)
                {
                    var gi = g[i * k + t];
                    if (gi == 0) continue;
                    DenseMath.Axpy(-gi, rowsB.AsSpan(t * _n, _n), _p.AsSpan(i * _n, _n));
                    DenseMath.Axpy(-gi, betaB.AsSpan(t * _outputs, _outputs), _beta.AsSpan(i * _outputs, _outputs));
                }
        }

        private (double[] Inverse, int Start) BlockInverse(int c)
        {
            var k = _kernel;
            var b0 = c * k;
            var block = new double[k * k];
            for (var i = 0; i < k; i++)
                for (var j = 0; j < k; j++) block[i * k + j] = _p[(b0 + i) * _n + b0 + j];
            var identity = new double[k * k];
            for (var i = 0; i < k; i++) identity[i * k + i] = 1;
            return (DenseMath.SolveSpd(block, k, identity, k) ?? new double[k * k], b0);
        }
    }
}
