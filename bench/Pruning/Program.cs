using ModelCompression.Bench.Pruning;

// Usage: dotnet run -c Release --project bench/Pruning [-- <fixture data folder>]
var data = args.Length > 0 ? args[0] : Path.Combine(AppContext.BaseDirectory, "data");
PruningBenchmark.Run(data, Console.Out);
