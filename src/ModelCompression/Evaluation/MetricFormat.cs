using System.Globalization;

namespace ModelCompression.Evaluation;

/// <summary>
/// The one way numbers are written: gate messages, the console summary, Markdown and HTML all use these, so a
/// threshold message and the report that explains it show the same digits. Fractions (accuracy, agreement) are
/// percents with 2 decimals, their differences points with 2 decimals, ratios 3 decimals, times milliseconds with 2.
/// </summary>
public static class MetricFormat
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>A fraction in [0, 1] (accuracy, agreement) as a percent: <c>93.15 %</c>.</summary>
    public static string Percent(double? fraction) => fraction is { } v && double.IsFinite(v) ? (v * 100).ToString("0.00", Invariant) + " %" : "–";

    /// <summary>A difference of two fractions in percentage points, unsigned: <c>0.45 pt</c>.</summary>
    public static string Points(double fraction) => (fraction * 100).ToString("0.00", Invariant) + " pt";

    /// <summary>after − before in signed percentage points: <c>-0.45 pt</c>.</summary>
    public static string PointChange(double? before, double? after) =>
        before is { } b && after is { } a ? ((a - b) * 100).ToString("+0.00;-0.00;0.00", Invariant) + " pt" : "–";

    /// <summary>A ratio of two measurements (latency, size, parameters): <c>0.400x</c>.</summary>
    public static string Ratio(double? value) => value is { } v && double.IsFinite(v) ? v.ToString("0.000", Invariant) + "x" : "–";

    /// <summary>A range of ratios: <c>0.390x–0.410x</c>.</summary>
    public static string RatioRange(double min, double max) => Ratio(min) + "–" + Ratio(max);

    public static string Milliseconds(double? value) => value is { } v && double.IsFinite(v) ? v.ToString("0.00", Invariant) + " ms" : "–";

    /// <summary>A range of times in one unit: <c>1.20–1.31 ms</c>.</summary>
    public static string MillisecondsRange(double min, double max) => min.ToString("0.00", Invariant) + "–" + max.ToString("0.00", Invariant) + " ms";

    /// <summary>A fraction of zeros (sparsity): <c>80.0 %</c>.</summary>
    public static string Sparsity(double fraction) => (fraction * 100).ToString("0.0", Invariant) + " %";

    public static string Bytes(long bytes) => bytes >= 1 << 20 ? (bytes / 1048576.0).ToString("0.00", Invariant) + " MiB" : bytes >= 1024 ? (bytes / 1024.0).ToString("0.0", Invariant) + " KiB" : bytes + " B";

    public static string Count(long n) => n.ToString("N0", Invariant);

    /// <summary>A relative error or similarity in (0, 1]: 4 significant decimals.</summary>
    public static string Error(double? value) => value is { } v && double.IsFinite(v) ? v.ToString("0.0000", Invariant) : "–";

    /// <summary>A layer's relative error, marked "⚠" when it loses half the layer's signal or more.</summary>
    public static string LayerError(double? value) => value is { } v && (v >= Passes.LayerRecord.HighError || !double.IsFinite(v)) ? "⚠ " + Error(v) : Error(value);

    /// <summary>A cosine similarity: 5 decimals, so 0.99995 and a 0.9999 floor read apart.</summary>
    public static string Cosine(double? value) => value is { } v && double.IsFinite(v) ? v.ToString("0.00000", Invariant) : "–";

    /// <summary>An intersection over union, to five places like a cosine.</summary>
    public static string IoU(double? value) => Cosine(value);

    /// <summary>A signal-to-noise ratio: <c>38.21 dB</c>; identical outputs read <c>∞ dB</c>.</summary>
    public static string Decibels(double? value) => value switch
    {
        double.PositiveInfinity => "∞ dB",
        double.NegativeInfinity => "-∞ dB",
        { } v when double.IsFinite(v) => v.ToString("0.00", Invariant) + " dB",
        _ => "–",
    };

    /// <summary>An absolute error or value in the output's own units: 4 significant digits (<c>0.01234</c>, <c>1.235E+03</c>).</summary>
    public static string Magnitude(double? value) => value is { } v && double.IsFinite(v) ? v.ToString("G4", Invariant) : "–";
}
