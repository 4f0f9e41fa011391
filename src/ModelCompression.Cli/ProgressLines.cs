namespace ModelCompression.Cli;

/// <summary>
/// Progress as plain lines, for output that is not a terminal (CI logs, MSBuild): a line when a stage starts, then
/// while it runs, at most one line per <see cref="Interval"/>, with the fraction done and the time left at the pace
/// so far. A stage of a large model can run for many minutes; silence for that long looks like a hang.
/// </summary>
public sealed class ProgressLines(TextWriter output, TimeProvider time) : IProgress<(string Stage, double Fraction)>
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(30);

    private string? _stage;
    private long _started;
    private long _lastLine;

    public void Report((string Stage, double Fraction) value)
    {
        var now = time.GetTimestamp();
        if (value.Stage != _stage)
        {
            _stage = value.Stage;
            _started = _lastLine = now;
            output.WriteLine($"  {value.Stage}…");
            return;
        }
        if (time.GetElapsedTime(_lastLine, now) < Interval || value.Fraction <= 0 || value.Fraction >= 1) return;
        _lastLine = now;
        var elapsed = time.GetElapsedTime(_started, now);
        var left = TimeSpan.FromTicks((long)(elapsed.Ticks * (1 - value.Fraction) / value.Fraction));
        output.WriteLine($"  {value.Stage}: {value.Fraction * 100:0} %, about {Duration(left)} left");
    }

    /// <summary>"40 s", "7 min", "1 h 05 min": as precise as a guess from the pace so far deserves.</summary>
    public static string Duration(TimeSpan span) =>
        span.TotalSeconds < 60 ? $"{Math.Max(1, (int)Math.Round(span.TotalSeconds))} s"
        : span.TotalMinutes < 60 ? $"{(int)Math.Round(span.TotalMinutes)} min"
        : $"{(int)span.TotalHours} h {span.Minutes:00} min";
}
