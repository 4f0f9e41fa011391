using System.IO.Compression;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace ModelCompression.MSBuild.Tests;

/// <summary>Checks of the packed package's targets against the documented settings.</summary>
[TestClass]
public sealed partial class TargetsTests
{
    [TestMethod]
    public void EveryPolicySetting_HasACompressModelDefaultProperty_GeneratedIntoThePackage()
    {
        // The README's settings table is kept equal to the engine's settings by the CLI tests.
        var settings = SettingRow().Matches(File.ReadAllText(Path.Combine(PackageFeed.RepositoryRoot, "README.md"))).Select(m => m.Groups[1].Value).ToHashSet();
        Assert.IsNotEmpty(settings, "no settings table in the README");

        using var package = ZipFile.OpenRead(Path.Combine(PackageFeed.FeedFolder, $"ModelCompression.MSBuild.{PackageFeed.Version}.nupkg"));
        foreach (var folder in new[] { "build", "buildTransitive" })
        {
            var entry = package.GetEntry($"{folder}/ModelCompression.MSBuild.Settings.targets");
            Assert.IsNotNull(entry, $"{folder}/ModelCompression.MSBuild.Settings.targets is not in the package");
            using var stream = entry.Open();
            var targets = XDocument.Load(stream);
            XNamespace ns = targets.Root!.Name.Namespace;
            var defaults = targets.Root.Elements(ns + "ItemDefinitionGroup").Elements(ns + "CompressModel").Elements()
                .Where(e => e.Value == $"$(CompressModelDefault{e.Name.LocalName})"
                            && (string?)e.Attribute("Condition") == $"'$(CompressModelDefault{e.Name.LocalName})' != ''")
                .Select(e => e.Name.LocalName)
                .ToHashSet();
            CollectionAssert.AreEquivalent(settings.Order().ToArray(), defaults.Order().ToArray(), $"{folder}: one CompressModelDefault<Setting> line per setting");
        }
    }

    [GeneratedRegex(@"^\| `(\w+)` \(`--", RegexOptions.Multiline)]
    private static partial Regex SettingRow();
}
