namespace ModelCompression.Reporting;

/// <summary>Writes &lt;name&gt;.report.json, .report.md and .report.html into the report folder (each atomically).</summary>
public static class ReportWriter
{
    /// <param name="name">The output model's file name without extension, so runs with different outputs never share a report.</param>
    public static void WriteAll(CompressionReport report, string directory, string name)
    {
        Directory.CreateDirectory(directory);
        Write(Path.Combine(directory, name + ".report.json"), ReportJson.Serialize(report));
        Write(Path.Combine(directory, name + ".report.md"), MarkdownReport.Render(report));
        Write(Path.Combine(directory, name + ".report.html"), HtmlReport.Render(report));
    }

    private static void Write(string path, string text)
    {
        // A temporary name of its own: two runs writing the same report never write into each other's file.
        var temp = Onnx.TempFiles.For(path);
        try
        {
            File.WriteAllText(temp, text);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
