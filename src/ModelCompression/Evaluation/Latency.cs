using ModelCompression.Data;
using ModelCompression.Runtime;

namespace ModelCompression.Evaluation;

/// <summary>Latency of one model on one batch: every timed run, and their median and 95th percentile.</summary>
public sealed record LatencyStats(double P50Ms, double P95Ms, int Runs)
{
    public static LatencyStats From(IReadOnlyCollection<double> times)
    {
        var sorted = times.Order().ToArray();
        return new LatencyStats(Percentile(sorted, 0.5), Percentile(sorted, 0.95), sorted.Length);
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
    public const int RunsPerRound = 5;

    public static (LatencyStats Original, LatencyStats Candidate) Measure(OnnxRuntimeSession original, OnnxRuntimeSession candidate,
        IReadOnlyList<NdArray> batch, int rounds, CancellationToken cancellation = default, IProgress<double>? progress = null)
    {
        original.Time(batch, WarmupRuns);
        candidate.Time(batch, WarmupRuns);
        var a = new List<double>();
        var b = new List<double>();
        for (var round = 0; round < rounds; round++)
        {
            cancellation.ThrowIfCancellationRequested();
            if (round % 2 == 0)
            {
                a.AddRange(original.Time(batch, RunsPerRound));
                b.AddRange(candidate.Time(batch, RunsPerRound));
            }
            else
            {
                b.AddRange(candidate.Time(batch, RunsPerRound));
                a.AddRange(original.Time(batch, RunsPerRound));
            }
            progress?.Report((round + 1.0) / rounds);
        }
        return (LatencyStats.From(a), LatencyStats.From(b));
    }
}
