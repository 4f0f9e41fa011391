using ModelCompression.Data;
using ModelCompression.Runtime;

namespace ModelCompression.Evaluation;

/// <summary>
/// Latency of one model on one batch: the median and 95th percentile of every timed run, and the same per round, so
/// a report can show how much they moved between rounds (a ratio under load is only as good as its spread).
/// </summary>
public sealed record LatencyStats(double P50Ms, double P95Ms, int Runs)
{
    /// <summary>Median of each round's runs, in round order (empty when not timed in rounds).</summary>
    public IReadOnlyList<double> RoundP50Ms { get; init; } = [];
    /// <summary>95th percentile of each round's runs, in round order.</summary>
    public IReadOnlyList<double> RoundP95Ms { get; init; } = [];

    public static LatencyStats From(IReadOnlyCollection<double> times)
    {
        var sorted = times.Order().ToArray();
        return new LatencyStats(Percentile(sorted, 0.5), Percentile(sorted, 0.95), sorted.Length);
    }

    /// <summary>Pooled percentiles over all rounds, plus each round's own.</summary>
    public static LatencyStats FromRounds(IReadOnlyList<IReadOnlyCollection<double>> rounds)
    {
        var all = From(rounds.SelectMany(r => r).ToList());
        var perRound = rounds.Select(From).ToList();
        return all with { RoundP50Ms = perRound.Select(r => r.P50Ms).ToList(), RoundP95Ms = perRound.Select(r => r.P95Ms).ToList() };
    }

    private static double Percentile(double[] sorted, double q)
    {
        if (sorted.Length == 0) return double.NaN;
        var position = q * (sorted.Length - 1);
        var lo = (int)Math.Floor(position);
        var hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo);
    }
}

/// <summary>
/// Times two models side by side: warm-up, then rounds that alternate which model goes first, so drift on a noisy
/// machine (frequency scaling, a neighbour's load) hits both equally and the ratio holds.
/// </summary>
public static class LatencyComparison
{
    public const int WarmupRuns = 3;
    /// <summary>Each round times each model for at least this long, so fast models get enough runs for a stable median.</summary>
    public const double MinRoundMilliseconds = 30;

    public static (LatencyStats Original, LatencyStats Candidate) Measure(OnnxRuntimeSession original, OnnxRuntimeSession candidate,
        IReadOnlyList<NdArray> batch, int rounds, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        var warmup = Math.Min(original.Time(batch, WarmupRuns).Min(), candidate.Time(batch, WarmupRuns).Min());
        var runsPerRound = Math.Clamp((int)Math.Ceiling(MinRoundMilliseconds / Math.Max(warmup, 0.01)), 5, 200);
        var a = new List<IReadOnlyCollection<double>>();
        var b = new List<IReadOnlyCollection<double>>();
        for (var round = 0; round < rounds; round++)
        {
            cancellation.ThrowIfCancellationRequested();
            if (round % 2 == 0)
            {
                a.Add(original.Time(batch, runsPerRound).ToList());
                b.Add(candidate.Time(batch, runsPerRound).ToList());
            }
            else
            {
                b.Add(candidate.Time(batch, runsPerRound).ToList());
                a.Add(original.Time(batch, runsPerRound).ToList());
            }
            progress?.Report((round + 1.0) / rounds);
        }
        return (LatencyStats.FromRounds(a), LatencyStats.FromRounds(b));
    }

    /// <summary>
    /// Times one model alone, in rounds like <see cref="Measure"/>: for models too large to hold two sessions at
    /// once, each is timed in turn. The candidate gets the original's runs per round so both are timed alike.
    /// </summary>
    /// <param name="runsPerRound">Null: chosen from this model's warm-up runs.</param>
    public static (LatencyStats Stats, int RunsPerRound) MeasureAlone(OnnxRuntimeSession session, IReadOnlyList<NdArray> batch, int rounds,
        int? runsPerRound = null, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        var warmup = session.Time(batch, WarmupRuns).Min();
        var runs = runsPerRound ?? Math.Clamp((int)Math.Ceiling(MinRoundMilliseconds / Math.Max(warmup, 0.01)), 5, 200);
        var times = new List<IReadOnlyCollection<double>>();
        for (var round = 0; round < rounds; round++)
        {
            cancellation.ThrowIfCancellationRequested();
            times.Add(session.Time(batch, runs).ToList());
            progress?.Report((round + 1.0) / rounds);
        }
        return (LatencyStats.FromRounds(times), runs);
    }
}
