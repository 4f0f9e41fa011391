using ModelCompression.Policy;

namespace ModelCompression.Cli.Tests;

/// <summary>
/// The docs show every setting exactly as the options records declare them. When a setting changes, regenerate:
/// <c>compress-model settings --format markdown</c> (between the README's settings markers) and
/// <c>compress-model settings --format json-schema -o docs/policy-file.schema.json</c>.
/// </summary>
[TestClass]
public sealed class ReadmeTests
{
    private static string RepositoryFile(string relative)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "BuildTasks.sln"))) dir = dir.Parent;
        return Path.Combine(dir!.FullName, relative);
    }

    [TestMethod]
    public void ReadmeSettingsTables_AreTheGeneratedOnes()
    {
        var readme = File.ReadAllText(RepositoryFile("README.md")).ReplaceLineEndings("\n");
        var begin = readme.IndexOf("<!-- settings:begin", StringComparison.Ordinal);
        var end = readme.IndexOf("<!-- settings:end -->", StringComparison.Ordinal);
        Assert.IsTrue(begin >= 0 && end > begin, "README.md lacks the settings:begin/settings:end markers");
        var committed = readme[(readme.IndexOf('\n', begin) + 1)..end].Trim('\n');
        var generated = SettingsDocs.Markdown().Trim('\n');
        Assert.AreEqual(generated, committed, "README's settings tables are out of date: replace the text between the markers with the output of `compress-model settings --format markdown`");
    }

    [TestMethod]
    public void PolicyFileSchema_IsTheGeneratedOne()
    {
        var committed = File.ReadAllText(RepositoryFile("docs/policy-file.schema.json")).ReplaceLineEndings("\n");
        Assert.AreEqual(SettingsDocs.JsonSchema(), committed, "docs/policy-file.schema.json is out of date: run `compress-model settings --format json-schema -o docs/policy-file.schema.json`");
    }
}
