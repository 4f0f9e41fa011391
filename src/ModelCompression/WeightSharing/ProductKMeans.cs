namespace ModelCompression.WeightSharing;

/// <summary>
/// A layer's weights as vectors of <see cref="Dimension"/> consecutive inputs, each an index into a codebook of
/// shared vectors: <see cref="Values"/> is [entries, Dimension] row-major, <see cref="Indices"/> one per vector.
/// </summary>
internal sealed record SharedVectors(float[] Values, int Dimension, byte[] Indices, int Iterations, bool Converged);

/// <summary>
/// Product quantization of a weight matrix (Jégou et al. 2011; Stock et al., "And the Bit Goes Down", 2020): each
/// [out, in] row is cut into in / d sub-vectors of d consecutive inputs, and all sub-vectors of the layer share one
/// codebook of k vectors found by weighted k-means (Lloyd) with k-means++ seeding. Every coordinate carries the
/// importance of its input, so the fit minimizes Σ h_j (w_j − c_j)² — the output error proxy when h is E[x²].
/// Deterministic: the seeding draws from a SplitMix64 stream of the given seed; ties go to the lower index.
/// </summary>
internal static class ProductKMeans
{
    /// <summary>
    /// Shares the sub-vectors of <paramref name="matrix"/> ([rows, cols], cols a multiple of <paramref name="d"/>)
    /// among at most <paramref name="k"/> vectors. <paramref name="importance"/>: one positive weight per column.
    /// With <paramref name="keepZero"/>, all-zero sub-vectors (pruned) take a fixed zero entry 0 and the others
    /// share k − 1. Unused entries are dropped.
    /// </summary>
    public static SharedVectors Fit(float[] matrix, int rows, int cols, int d, int k, int maxIterations, bool keepZero, double[] importance, int seed)
    {
        if (k is < 2 or > 256) throw new ArgumentOutOfRangeException(nameof(k), k, "a codebook has 2..256 entries (uint8 indices)");
        if (cols % d != 0) throw new ArgumentException("the row length must be a multiple of the sub-vector length", nameof(d));
        var blocks = cols / d;
        var count = rows * blocks;
        // Vector v = (row r, block b) starts at matrix[r * cols + b * d] = matrix[v * d]: rows are consecutive blocks.
        var zero = new bool[count];
        var live = new List<int>(count);
        for (var v = 0; v < count; v++)
        {
            zero[v] = keepZero && matrix.AsSpan(v * d, d).IndexOfAnyExcept(0f) < 0;
            if (!zero[v]) live.Add(v);
        }
        var free = Math.Min(keepZero ? k - 1 : k, live.Count);
        var centroids = Seed(matrix, live, d, blocks, free, importance, seed);
        var assignment = new int[count];
        var iterations = 0;
        var converged = live.Count == 0;
        var settledEarly = false;
        var weights = importance.Select(x => (float)x).ToArray();
        Array.Fill(assignment, -1);
        var sums = new double[free * d];
        var masses = new double[free * d];
        while (!converged && iterations < maxIterations)
        {
            iterations++;
            var changed = 0;
            foreach (var v in live)
            {
                var best = Nearest(matrix, v, d, (v % blocks) * d, centroids, free, weights);
                if (best != assignment[v]) { assignment[v] = best; changed++; }
            }
            if (changed == 0) { converged = true; iterations--; break; }
            // Vector k-means creeps on for hundreds of iterations with a handful of vectors trading clusters, each
            // iteration O(n·k·d); once at most 0.1 % move the codebook no longer changes what matters.
            if (changed <= live.Count / 1000) { settledEarly = true; converged = true; }
            Array.Clear(sums);
            Array.Clear(masses);
            foreach (var v in live)
            {
                var c = assignment[v] * d;
                var offset = (v % blocks) * d;
                for (var j = 0; j < d; j++)
                {
                    var h = importance[offset + j];
                    sums[c + j] += h * matrix[v * d + j];
                    masses[c + j] += h;
                }
            }
            // An empty cluster (or a coordinate no weight of it carries) keeps its centroid.
            for (var j = 0; j < free * d; j++) if (masses[j] > 0) centroids[j] = (float)(sums[j] / masses[j]);
        }
        if (!converged || settledEarly)
        {
            // The last update may have moved vectors: assign to what is stored (settled early: within 0.1 %).
            var moved = 0;
            foreach (var v in live)
            {
                var best = Nearest(matrix, v, d, (v % blocks) * d, centroids, free, weights);
                if (best != assignment[v]) { assignment[v] = best; moved++; }
            }
            converged = settledEarly || moved == 0;
        }
        // Drop unused entries, keeping the order; the zero entry (if any) first.
        var used = new bool[free];
        foreach (var v in live) used[assignment[v]] = true;
        var renumber = new int[free];
        var table = new List<float>();
        if (keepZero) table.AddRange(new float[d]);
        for (var c = 0; c < free; c++)
        {
            if (!used[c]) continue;
            renumber[c] = table.Count / d;
            table.AddRange(centroids.AsSpan(c * d, d).ToArray());
        }
        var indices = new byte[count];
        for (var v = 0; v < count; v++) indices[v] = zero[v] ? (byte)0 : (byte)renumber[assignment[v]];
        return new SharedVectors(table.ToArray(), d, indices, iterations, converged);
    }

    /// <summary>The entry nearest to vector v under the importance-weighted distance (ties: the lower index).</summary>
    private static int Nearest(float[] matrix, int v, int d, int offset, float[] centroids, int k, float[] importance)
    {
        var best = 0;
        var bestDistance = float.PositiveInfinity;
        var x = matrix.AsSpan(v * d, d);
        var h = importance.AsSpan(offset, d);
        for (var c = 0; c < k; c++)
        {
            float distance = 0;
            var centroid = centroids.AsSpan(c * d, d);
            for (var j = 0; j < d; j++)
            {
                var diff = x[j] - centroid[j];
                distance += h[j] * diff * diff;
            }
            if (distance < bestDistance) { bestDistance = distance; best = c; }
        }
        return best;
    }

    /// <summary>
    /// k-means++ seeding (Arthur and Vassilvitskii 2007) under the weighted distance: the first centre is a random
    /// vector, each next one drawn with probability proportional to its distance to the nearest centre so far.
    /// </summary>
    private static float[] Seed(float[] matrix, List<int> live, int d, int blocks, int k, double[] importance, int seed)
    {
        var centroids = new float[k * d];
        if (k == 0) return centroids;
        var random = new SplitMix64((ulong)seed);
        var nearest = new double[live.Count];
        Array.Fill(nearest, double.PositiveInfinity);
        var chosen = live[(int)(random.NextDouble() * live.Count)];
        for (var c = 0; c < k; c++)
        {
            matrix.AsSpan(chosen * d, d).CopyTo(centroids.AsSpan(c * d, d));
            if (c == k - 1) break;
            double total = 0;
            for (var i = 0; i < live.Count; i++)
            {
                var v = live[i];
                var offset = (v % blocks) * d;
                double distance = 0;
                for (var j = 0; j < d; j++)
                {
                    double diff = matrix[v * d + j] - centroids[c * d + j];
                    distance += importance[offset + j] * diff * diff;
                }
                if (distance < nearest[i]) nearest[i] = distance;
                total += nearest[i];
            }
            if (total <= 0)
            {
                // Fewer distinct vectors than entries: the rest repeat the first (unused, dropped later).
                for (var rest = c + 1; rest < k; rest++) centroids.AsSpan(0, d).CopyTo(centroids.AsSpan(rest * d, d));
                break;
            }
            var target = random.NextDouble() * total;
            var pick = live.Count - 1;
            double running = 0;
            for (var i = 0; i < live.Count; i++)
            {
                running += nearest[i];
                if (running > target) { pick = i; break; }
            }
            chosen = live[pick];
        }
        return centroids;
    }

    /// <summary>SplitMix64 (Steele et al. 2014): a tiny generator whose stream is fixed by its seed on every platform.</summary>
    private struct SplitMix64(ulong state)
    {
        private ulong _state = state;

        public double NextDouble()
        {
            var z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return ((z ^ (z >> 31)) >> 11) * (1.0 / (1UL << 53));
        }
    }
}
