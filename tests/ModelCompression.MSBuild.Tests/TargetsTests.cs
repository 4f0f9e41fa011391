using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace ModelCompression.MSBuild.Tests;

/// <summary>Static checks of build/ModelCompression.MSBuild.targets against the documented settings.</summary>
[TestClass]
public sealed partial class TargetsTests
{
    private static string RepositoryFile(string relativePath) => Path.Combine(PackageFeed.RepositoryRoot, relativePath);

    [TestMethod]
    public void EveryPolicySetting_HasACompressModelDefaultProperty()
    {
        // The README's settings table is kept equal to the engine's settings by the CLI tests.
        var settings = SettingRow().Matches(File.ReadAllText(RepositoryFile("README.md"))).Select(m => m.Groups[1].Value)
            .Where(name => name != "Excluded")   // policy file only
            .ToHashSet();
        Assert.IsNotEmpty(settings, "no settings table in the README");

        var targets = XDocument.Load(RepositoryFile("build/ModelCompression.MSBuild.targets"));
        XNamespace ns = targets.Root!.Name.Namespace;
        var defaults = targets.Root.Elements(ns + "ItemDefinitionGroup").Elements(ns + "CompressModel").Elements()
            .Where(e => e.Value == $"$(CompressModelDefault{e.Name.LocalName})"
                        && (string?)e.Attribute("Condition") == $"'$(CompressModelDefault{e.Name.LocalName})' != ''")
            .Select(e => e.Name.LocalName)
            .ToHashSet();

        CollectionAssert.AreEquivalent(settings.Order().ToArray(), defaults.Order().ToArray(),
            "the ItemDefinitionGroup in ModelCompression.MSBuild.targets needs one CompressModelDefault<Setting> line per setting");
    }

    [GeneratedRegex(@"^\| `(\w+)` \(`--", RegexOptions.Multiline)]
    private static partial Regex SettingRow();
}
