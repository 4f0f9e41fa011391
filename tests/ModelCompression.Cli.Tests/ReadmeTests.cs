using ModelCompression.Policy;

namespace ModelCompression.Cli.Tests;

/// <summary>The README documents every policy setting exactly as the settings table defines it.</summary>
[TestClass]
public sealed class ReadmeTests
{
    public static string PolicyTable() => string.Join("\n", PolicySettings.All.Select(s =>
        $"| `{s.Name}` (`{s.OptionName}`) | {s.Values.Replace("|", "\\|")} | {s.Description.Replace("|", "\\|")}{(s.PerLayer ? " Per layer." : "")} |"));

    [TestMethod]
    public void PolicyTable_MatchesTheSettings()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "BuildTasks.sln"))) dir = dir.Parent;
        var readme = File.ReadAllText(Path.Combine(dir!.FullName, "README.md")).ReplaceLineEndings("\n");
        var table = PolicyTable();
        Assert.Contains(table, readme, "README's policy table is out of date; replace it with:\n" + table);
    }
}
