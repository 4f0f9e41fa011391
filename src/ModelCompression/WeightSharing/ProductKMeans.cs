using System.Numerics;

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
/// Fast enough for the pass: the distance expands to Σh·c² − 2Σ(h·x)·c (+ a term of x alone), so the nearest entry is
/// one SIMD sweep over a transposed codebook; large layers are fitted on a fixed sample of their vectors (as Faiss
/// does, <see cref="PointsPerEntry"/> per entry) and then every vector is assigned once.
/// Deterministic: the sample and the seeding draw from a SplitMix64 stream of the given seed; ties go to the lower
/// index whatever the SIMD width (each lane computes the same float operations in the same order, no fused multiply-add).
/// </summary>
internal static class ProductKMeans
{
    /// <summary>Vectors per codebook entry that the fit sees at most (Faiss's default is 256; 128 measured no worse here).</summary>
    internal const int PointsPerEntry = 128;

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
        var random = new SplitMix64((ulong)seed);
        var free = Math.Min(keepZero ? k - 1 : k, live.Count);
        var fitted = Sample(live, (long)PointsPerEntry * free, ref random);
        var centroids = Seed(matrix, fitted, d, blocks, free, importance, ref random);
        var search = new Search(d, free, blocks, importance);
        var assignment = new int[count];
        Array.Fill(assignment, -1);
        var iterations = 0;
        var converged = fitted.Length == 0;
        var sums = new double[free * d];
        var masses = new double[free * d];
        while (!converged && iterations < maxIterations)
        {
            iterations++;
            search.Load(centroids);
            var changed = 0;
            foreach (var v in fitted)
            {
                var best = search.Nearest(matrix, v);
                if (best != assignment[v]) { assignment[v] = best; changed++; }
            }
            if (changed == 0) { converged = true; iterations--; break; }
            // Vector k-means creeps on for hundreds of iterations with a handful of vectors trading clusters; once at
            // most 0.1 % move, the codebook no longer changes what matters.
            if (changed <= fitted.Length / 1000) converged = true;
            Update(matrix, fitted, assignment, d, blocks, importance, sums, masses, centroids);
        }
        // Every vector (the sample's too: the last update moved the entries) goes to its nearest stored entry; when the
        // fit saw a sample, one update over all vectors and a last assignment use the whole layer.
        search.Load(centroids);
        var all = live.ToArray();
        foreach (var v in all) assignment[v] = search.Nearest(matrix, v);
        if (fitted.Length < all.Length)
        {
            Update(matrix, all, assignment, d, blocks, importance, sums, masses, centroids);
            search.Load(centroids);
            foreach (var v in all) assignment[v] = search.Nearest(matrix, v);
        }
        // Drop unused entries, keeping the order; the zero entry (if any) first.
        var used = new bool[free];
        foreach (var v in all) used[assignment[v]] = true;
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

    /// <summary>At most <paramref name="cap"/> of the vectors, drawn without replacement, in their original order.</summary>
    private static int[] Sample(List<int> live, long cap, ref SplitMix64 random)
    {
        if (live.Count <= cap) return live.ToArray();
        var pool = live.ToArray();
        // Partial Fisher–Yates: the first cap slots become a uniform sample.
        for (var i = 0; i < cap; i++)
        {
            var j = i + (int)(random.NextDouble() * (pool.Length - i));
            (pool[i], pool[j]) = (pool[j], pool[i]);
        }
        var chosen = pool[..(int)cap];
        Array.Sort(chosen);
        return chosen;
    }

    /// <summary>Weighted means of the vectors of each entry, per coordinate; an empty entry (or coordinate) keeps its value.</summary>
    private static void Update(float[] matrix, int[] vectors, int[] assignment, int d, int blocks, double[] importance, double[] sums, double[] masses, float[] centroids)
    {
        Array.Clear(sums);
        Array.Clear(masses);
        foreach (var v in vectors)
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
        for (var j = 0; j < sums.Length; j++) if (masses[j] > 0) centroids[j] = (float)(sums[j] / masses[j]);
    }

    /// <summary>
    /// Nearest-entry search under Σ_j h_j (x_j − c_j)²: argmin over c of N_b[c] − Σ_j 2h_j x_j · C[j, c], with
    /// N_b[c] = Σ_j h_j c_j² per block b (the importances differ by block) and C the codebook transposed and padded to
    /// whole SIMD vectors (padding entries have N = +∞).
    /// </summary>
    private sealed class Search
    {
        private readonly int _d, _k, _padded, _blocks;
        private readonly float[] _importance, _transposed, _norms, _scaled;
        private readonly bool _uniform;

        public Search(int d, int k, int blocks, double[] importance)
        {
            (_d, _k, _blocks) = (d, k, blocks);
            var width = Vector<float>.Count;
            _padded = Math.Max(width, (k + width - 1) / width * width);
            _importance = importance.Select(h => (float)h).ToArray();
            _uniform = _importance.All(h => h == _importance[0]);
            _transposed = new float[d * _padded];
            _norms = new float[(_uniform ? 1 : blocks) * _padded];
            _scaled = new float[d];
        }

        public void Load(float[] centroids)
        {
            for (var c = 0; c < _k; c++)
                for (var j = 0; j < _d; j++)
                    _transposed[j * _padded + c] = centroids[c * _d + j];
            for (var b = 0; b < _norms.Length / _padded; b++)
            {
                var norms = _norms.AsSpan(b * _padded, _padded);
                norms.Fill(float.PositiveInfinity);
                for (var c = 0; c < _k; c++)
                {
                    float n = 0;
                    for (var j = 0; j < _d; j++)
                    {
                        var x = centroids[c * _d + j];
                        n += _importance[b * _d + j] * x * x;
                    }
                    norms[c] = n;
                }
            }
        }

        public int Nearest(float[] matrix, int v)
        {
            var block = v % _blocks;
            var offset = block * _d;
            for (var j = 0; j < _d; j++) _scaled[j] = 2 * _importance[offset + j] * matrix[v * _d + j];
            var norms = _norms.AsSpan(_uniform ? 0 : block * _padded, _padded);
            var width = Vector<float>.Count;
            var bestValue = new Vector<float>(float.PositiveInfinity);
            var bestIndex = Vector<int>.Zero;
            var lane = Vector<int>.Indices;
            for (var c0 = 0; c0 < _padded; c0 += width)
            {
                var score = new Vector<float>(norms[c0..]);
                for (var j = 0; j < _d; j++) score -= new Vector<float>(_scaled[j]) * new Vector<float>(_transposed.AsSpan(j * _padded + c0));
                var less = Vector.LessThan(score, bestValue);
                bestValue = Vector.ConditionalSelect(less, score, bestValue);
                bestIndex = Vector.ConditionalSelect(Vector.AsVectorInt32(less), lane + new Vector<int>(c0), bestIndex);
            }
            // Each lane holds its lowest-index minimum; across lanes the smallest value, then the lowest index.
            var best = int.MaxValue;
            var value = float.PositiveInfinity;
            for (var i = 0; i < width; i++)
                if (bestValue[i] < value || (bestValue[i] == value && bestIndex[i] < best)) (value, best) = (bestValue[i], bestIndex[i]);
            return best == int.MaxValue ? 0 : best;
        }
    }

    /// <summary>
    /// k-means++ seeding (Arthur and Vassilvitskii 2007) under the weighted distance: the first centre is a random
    /// vector, each next one drawn with probability proportional to its distance to the nearest centre so far.
    /// </summary>
    private static float[] Seed(float[] matrix, int[] live, int d, int blocks, int k, double[] importance, ref SplitMix64 random)
    {
        var centroids = new float[k * d];
        if (k == 0) return centroids;
        var nearest = new double[live.Length];
        Array.Fill(nearest, double.PositiveInfinity);
        var chosen = live[(int)(random.NextDouble() * live.Length)];
        for (var c = 0; c < k; c++)
        {
            matrix.AsSpan(chosen * d, d).CopyTo(centroids.AsSpan(c * d, d));
            if (c == k - 1) break;
            double total = 0;
            for (var i = 0; i < live.Length; i++)
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
            var pick = live.Length - 1;
            double running = 0;
            for (var i = 0; i < live.Length; i++)
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
