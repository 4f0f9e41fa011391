namespace ModelCompression.Reporting;

/// <summary>Writes &lt;name&gt;.report.json, .report.md and .report.html into the report folder (each atomically).</summary>
public static class ReportWriter
{
    public static void WriteAll(CompressionReport report, string directory, string name)
    {
        Directory.CreateDirectory(directory);
        Write(Path.Combine(directory, name + ".report.json"), ReportJson.Serialize(report));
        Write(Path.Combine(directory, name + ".report.md"), MarkdownReport.Render(report));
        Write(Path.Combine(directory, name + ".report.html"), HtmlReport.Render(report));
    }

    private static void Write(string path, string text)
    {
        var temp = path + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, path, overwrite: true);
    }
}
