using System.Globalization;
using System.Text;

namespace ModelCompression.Reliability;

/// <summary>Counts of outcomes per mutation kind, and the table the campaign prints.</summary>
public sealed class Tally
{
    private sealed class Row
    {
        public int Ms, Cases, Exit0, Exit1, Exit2, Exit3, ExitOther, Hangs, Crashes, StackTraces, Internal, LeftBehind, SourceModified, Undocumented, Uncoded, BadOutput, Wrong, Known;
    }

    private readonly SortedDictionary<string, Row> _rows = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, int> _codes = new(StringComparer.Ordinal);
    public List<Outcome> Failures { get; } = [];
    public int Cases { get; private set; }
    public int Passed { get; private set; }

    public void Add(Outcome o)
    {
        Cases++;
        var key = $"{o.Case.Category}/{o.Case.Kind}";
        if (!_rows.TryGetValue(key, out var r)) _rows[key] = r = new Row();
        r.Cases++;
        r.Ms += (int)o.Milliseconds;
        switch (o.ExitCode)
        {
            case 0: r.Exit0++; Passed++; break;
            case 1: r.Exit1++; break;
            case 2: r.Exit2++; break;
            case 3: r.Exit3++; break;
            case null: break;
            default: r.ExitOther++; break;
        }
        if (o.Hang) r.Hangs++;
        if (o.Crash is not null) r.Crashes++;
        if (o.StackTrace) r.StackTraces++;
        if (o.InternalError) r.Internal++;
        if (o.LeftBehind.Count > 0) r.LeftBehind++;
        if (o.SourceModified) r.SourceModified++;
        if (o.Undocumented.Count > 0) r.Undocumented++;
        if (o.Uncoded) r.Uncoded++;
        if (o.BadOutput is not null) r.BadOutput++;
        if (o.WrongOutcome is not null) r.Wrong++;
        if (o.Failed && o.KnownBug is not null) r.Known++;
        foreach (var code in o.Codes) _codes[code] = _codes.GetValueOrDefault(code) + 1;
        if (o.Failed) Failures.Add(o);
    }

    public int NewFailures => Failures.Count(f => f.KnownBug is null);

    public string Table()
    {
        var sb = new StringBuilder();
        string[] head = ["mutation", "ms/case", "cases", "exit0", "exit1", "exit2", "exit3", "other", "hang", "crash", "stack", "CM0001", "left", "srcmod", "undoc", "nocode", "badout", "wrong", "known"];
        var lines = _rows.Select(kv => Numbers(kv.Value).Prepend(kv.Key).ToArray()).ToList();
        var total = new Row();
        foreach (var r in _rows.Values)
            foreach (var f in typeof(Row).GetFields()) f.SetValue(total, (int)f.GetValue(total)! + (int)f.GetValue(r)!);
        lines.Add(Numbers(total).Prepend("total").ToArray());
        var widths = head.Select((h, i) => Math.Max(h.Length, lines.Max(l => l[i].Length))).ToArray();
        sb.AppendLine(string.Join("  ", head.Select((h, i) => i == 0 ? h.PadRight(widths[i]) : h.PadLeft(widths[i]))));
        foreach (var l in lines) sb.AppendLine(string.Join("  ", l.Select((v, i) => i == 0 ? v.PadRight(widths[i]) : v.PadLeft(widths[i]))));
        sb.AppendLine("coded errors: " + string.Join(", ", _codes.Select(kv => $"{kv.Key} {kv.Value}")));
        return sb.ToString();

        static string[] Numbers(Row r) => new[] { r.Ms / Math.Max(1, r.Cases), r.Cases, r.Exit0, r.Exit1, r.Exit2, r.Exit3, r.ExitOther, r.Hangs, r.Crashes, r.StackTraces, r.Internal, r.LeftBehind, r.SourceModified, r.Undocumented, r.Uncoded, r.BadOutput, r.Wrong, r.Known }
            .Select(n => n.ToString(CultureInfo.InvariantCulture)).ToArray();
    }
}
