using System.Diagnostics;
using MathNet.Numerics.Distributions;

namespace ModelCompression.Search;

/// <summary>A constraint of the search: a measured value that must end at most <see cref="Limit"/>.</summary>
/// <param name="Start">The value of the uncompressed model. When it already breaks the limit (a size or latency target),
/// the search approaches the limit through easier intermediate targets (<see cref="ConstrainedBayesianSearch.Target"/>).</param>
internal sealed record SearchConstraint(string Name, double Limit, double Start);

/// <summary>What one trial measured: the objective (smaller is better) and each constraint's value, in order.</summary>
internal sealed record Observation(double Objective, IReadOnlyList<double> Constraints);

/// <summary>One evaluated point: its knobs, what it measured, and the targets it was judged against then.</summary>
internal sealed record SearchTrial(int Index, double[] Knobs, Observation Outcome, IReadOnlyList<double> Targets, bool Feasible, double ElapsedSeconds);

internal sealed record SearchResult(IReadOnlyList<SearchTrial> Trials, SearchTrial? Best);

/// <summary>
/// Constrained Bayesian optimization after Tung &amp; Mori, "Constraint-Aware Deep Neural Network Compression" (ECCV
/// 2018): a Gaussian process models the objective and one models each constraint; the next point maximizes expected
/// improvement over the best trial that meets the current targets, weighted by the probability of meeting every
/// target. Targets the uncompressed model does not meet follow the paper's linear cooling schedule
/// g_t = p(F₀) + t/T·(c − p(F₀)), so early trials chase reachable targets and the last ones the real limit.
/// Points are knobs in [0, 1]^d; candidates come from a Halton sequence shifted by the seed, so the same outcomes
/// always give the same trials.
/// </summary>
internal static class ConstrainedBayesianSearch
{
    /// <summary>Candidate points scored by the acquisition each round.</summary>
    public const int Candidates = 1024;

    /// <param name="anchors">Points tried first, before the centre and the Halton sequence: the caller's known-good
    /// regions (for Auto, the uniform and default allocations), so the Gaussian process starts from them.</param>
    public static SearchResult Run(int dimensions, IReadOnlyList<SearchConstraint> constraints, int maxTrials, TimeSpan? maxTime, int seed,
        Func<double[], Observation> evaluate, CancellationToken cancellation = default, IReadOnlyList<double[]>? anchors = null)
    {
        if (dimensions < 1) throw new ArgumentOutOfRangeException(nameof(dimensions));
        if (maxTrials < 1) throw new ArgumentOutOfRangeException(nameof(maxTrials));
        var clock = Stopwatch.StartNew();
        var trials = new List<SearchTrial>();
        var candidates = Halton(Candidates, dimensions, seed, skip: 1);
        anchors ??= [];
        if (anchors.Any(a => a.Length != dimensions)) throw new ArgumentException("an anchor must have every dimension", nameof(anchors));
        // The anchors take the place of the space-filling start: only the centre follows them.
        var initial = Math.Min(maxTrials, anchors.Count > 0 ? anchors.Count + 1 : dimensions + 2);
        for (var t = 0; t < maxTrials; t++)
        {
            cancellation.ThrowIfCancellationRequested();
            if (t > 0 && maxTime is { } limit && clock.Elapsed >= limit) break;
            var targets = constraints.Select(c => Target(c, t, maxTrials)).ToArray();
            var knobs = t < anchors.Count ? anchors[t].Select(v => Math.Clamp(v, 0, 1)).ToArray()
                : t < initial ? InitialPoint(t - anchors.Count, dimensions, seed) : Next(trials, constraints, targets, candidates);
            var outcome = evaluate(knobs);
            if (outcome.Constraints.Count != constraints.Count) throw new InvalidOperationException("a trial must measure every constraint");
            trials.Add(new SearchTrial(t, knobs, outcome, targets, Meets(outcome, constraints.Select(c => c.Limit).ToArray()), clock.Elapsed.TotalSeconds));
        }
        var best = trials.Where(x => x.Feasible).OrderBy(x => x.Outcome.Objective).ThenBy(x => x.Index).FirstOrDefault();
        return new SearchResult(trials, best);
    }

    /// <summary>The target of <paramref name="constraint"/> at trial <paramref name="t"/> of <paramref name="total"/>: its limit, or on the cooling schedule when the uncompressed model breaks it.</summary>
    public static double Target(SearchConstraint constraint, int t, int total) =>
        constraint.Start <= constraint.Limit || double.IsNaN(constraint.Start)
            ? constraint.Limit
            : constraint.Start + (double)(t + 1) / total * (constraint.Limit - constraint.Start);

    private static bool Meets(Observation outcome, IReadOnlyList<double> targets) =>
        double.IsFinite(outcome.Objective) && outcome.Constraints.Select((v, k) => double.IsFinite(v) && v <= targets[k] + Tolerance).All(x => x);

    /// <summary>What the gate allows over a limit (accuracy differences such as 0.9085 − 0.8985 are not exact in binary).</summary>
    public const double Tolerance = 1e-12;

    /// <summary>The first points: the centre, then the seeded Halton sequence.</summary>
    private static double[] InitialPoint(int t, int dimensions, int seed) =>
        t == 0 ? Enumerable.Repeat(0.5, dimensions).ToArray() : Halton(1, dimensions, seed, skip: 1 + 7 * t)[0];

    private static double[] Next(List<SearchTrial> trials, IReadOnlyList<SearchConstraint> constraints, double[] targets, double[][] candidates)
    {
        var x = trials.Select(t => t.Knobs).ToList();
        // A failed trial (NaN/∞) still teaches the constraint models that its region is bad: it counts as far off.
        var objective = GaussianProcess.Fit(x, Clean(trials.Select(t => t.Outcome.Objective)));
        var models = constraints.Select((_, k) => GaussianProcess.Fit(x, Clean(trials.Select(t => t.Outcome.Constraints[k])))).ToList();
        var feasible = trials.Where(t => Meets(t.Outcome, targets)).Select(t => t.Outcome.Objective).ToList();
        double? best = feasible.Count > 0 ? feasible.Min() : null;

        double[]? chosen = null;
        var chosenScore = double.NegativeInfinity;
        foreach (var point in candidates.Concat(Around(trials, targets)))
        {
            if (x.Any(p => Distance(p, point) < 1e-3)) continue;
            var probability = 1.0;
            for (var k = 0; k < models.Count; k++)
            {
                var (m, s) = models[k].Predict(point);
                probability *= Normal.CDF(0, 1, (targets[k] - m) / s);
            }
            double score;
            var (mean, sd) = objective.Predict(point);
            if (best is { } b)
            {
                var z = (b - mean) / sd;
                score = ((b - mean) * Normal.CDF(0, 1, z) + sd * Normal.PDF(0, 1, z)) * probability;
            }
            // Nothing feasible yet: look where meeting the targets is likeliest, smaller objective breaking ties.
            else score = probability - 1e-6 * mean;
            if (score > chosenScore + 1e-15)
            {
                chosenScore = score;
                chosen = point;
            }
        }
        return chosen ?? candidates[trials.Count % candidates.Length];
    }

    /// <summary>Points near the best trials so far (a local refinement the global Halton grid is too coarse for).</summary>
    private static IEnumerable<double[]> Around(List<SearchTrial> trials, double[] targets)
    {
        var anchors = trials.Where(t => Meets(t.Outcome, targets)).OrderBy(t => t.Outcome.Objective).Take(2).Select(t => t.Knobs).ToList();
        var offsets = Halton(64, anchors.FirstOrDefault()?.Length ?? 1, 0, skip: 1);
        foreach (var anchor in anchors)
            foreach (var o in offsets)
                yield return anchor.Select((v, i) => Math.Clamp(v + 0.1 * (o[i] - 0.5), 0, 1)).ToArray();
    }

    private static List<double> Clean(IEnumerable<double> values)
    {
        var list = values.ToList();
        var finite = list.Where(double.IsFinite).ToList();
        var worst = finite.Count > 0 ? finite.Max() + Math.Max(1, Math.Abs(finite.Max())) : 1;
        return list.Select(v => double.IsFinite(v) ? v : worst).ToList();
    }

    private static double Distance(double[] a, double[] b)
    {
        var d = 0.0;
        for (var i = 0; i < a.Length; i++) d = Math.Max(d, Math.Abs(a[i] - b[i]));
        return d;
    }

    /// <summary>A Halton sequence (bases 2, 3, 5, …) with a Cranley–Patterson shift from the seed.</summary>
    internal static double[][] Halton(int count, int dimensions, int seed, int skip)
    {
        int[] primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
        if (dimensions > primes.Length) throw new ArgumentOutOfRangeException(nameof(dimensions));
        var shift = Enumerable.Range(0, dimensions).Select(d => seed == 0 ? 0 : Frac((seed + 1) * 0.6180339887498949 * (d + 1))).ToArray();
        var points = new double[count][];
        for (var i = 0; i < count; i++)
        {
            points[i] = new double[dimensions];
            for (var d = 0; d < dimensions; d++) points[i][d] = Frac(RadicalInverse(i + skip, primes[d]) + shift[d]);
        }
        return points;
    }

    private static double Frac(double v) => v - Math.Floor(v);

    private static double RadicalInverse(int index, int b)
    {
        double result = 0, f = 1.0 / b;
        for (var i = index; i > 0; i /= b, f /= b) result += f * (i % b);
        return result;
    }
}
