using ModelCompression.Onnx.Protobuf;

namespace ModelCompression.Onnx;

/// <summary>
/// A small editable view of a graph: who produces and consumes each value, initializers by name, node edits,
/// topological order, dead-code removal, fresh names and shapes. Indexes are rebuilt lazily after each edit.
/// </summary>
public sealed class OnnxGraph
{
    private Dictionary<string, NodeProto>? _producers;
    private Dictionary<string, List<NodeProto>>? _consumers;
    private Dictionary<string, TensorProto>? _initializers;
    private HashSet<string>? _names;
    private int _nameCounter;

    private Dictionary<GraphProto, OnnxGraph>? _subgraphs;
    private Dictionary<string, int>? _usesEverywhere;

    public OnnxGraph(GraphProto proto) => Proto = proto;

    private OnnxGraph(GraphProto proto, OnnxGraph parent) : this(proto) => Parent = parent;

    public GraphProto Proto { get; }
    /// <summary>The graph whose node holds this one as an attribute (If/Loop/Scan body); null for the main graph.</summary>
    public OnnxGraph? Parent { get; }
    public OnnxGraph Root => Parent?.Root ?? this;

    /// <summary>
    /// Every subgraph nested in this graph's nodes (at any depth, each after its parent), as views that see the outer
    /// scopes: <see cref="Initializer"/> finds outer initializers by name (ONNX lexical scoping), edits of an outer
    /// initializer go where it lives, and <see cref="FreshName"/> is unique across all graphs of the model.
    /// </summary>
    public IEnumerable<OnnxGraph> Subgraphs()
    {
        var views = _subgraphs ??= new Dictionary<GraphProto, OnnxGraph>(ReferenceEqualityComparer.Instance);
        foreach (var node in Proto.Node.ToList())
            foreach (var a in node.Attribute)
                foreach (var g in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G))
                {
                    if (!views.TryGetValue(g, out var view)) views[g] = view = new OnnxGraph(g, this);
                    yield return view;
                    foreach (var nested in view.Subgraphs()) yield return nested;
                }
    }

    /// <summary>This graph and every graph nested in it.</summary>
    public IEnumerable<OnnxGraph> SelfAndSubgraphs() => Subgraphs().Prepend(this);

    /// <summary>Nodes of every graph (this one and nested), each reading <paramref name="value"/> as a direct input, counted once per node.</summary>
    public int UsesEverywhere(string value)
    {
        var root = Root;
        if (root._usesEverywhere is null)
        {
            var uses = new Dictionary<string, int>(StringComparer.Ordinal);
            void Count(GraphProto graph)
            {
                foreach (var node in graph.Node)
                {
                    foreach (var input in node.Input.Distinct()) if (input.Length > 0) uses[input] = uses.GetValueOrDefault(input) + 1;
                    foreach (var a in node.Attribute) foreach (var g in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)) Count(g);
                }
            }
            Count(root.Proto);
            root._usesEverywhere = uses;
        }
        return root._usesEverywhere.GetValueOrDefault(value);
    }
    public IList<NodeProto> Nodes => Proto.Node;
    public IEnumerable<string> GraphInputNames => Proto.Input.Select(i => i.Name);
    public IEnumerable<string> GraphOutputNames => Proto.Output.Select(o => o.Name);

    /// <summary>Call after changing <see cref="Proto"/> directly.</summary>
    public void Invalidate()
    {
        _producers = null;
        _consumers = null;
        _initializers = null;
        _names = null;
        _usesEverywhere = null;
        _subgraphs = null; // views already handed out stay valid: they index their own graph and read outer ones live
        // An edit here changes what the outer graph's If/Loop node reads from its scope and which names are taken.
        Parent?.Invalidate();
    }

    public NodeProto? Producer(string value)
    {
        EnsureIndex();
        return _producers!.GetValueOrDefault(value);
    }

    public IReadOnlyList<NodeProto> Consumers(string value)
    {
        EnsureIndex();
        return _consumers!.TryGetValue(value, out var list) ? list : [];
    }

    /// <summary>The initializer of that name here or, in a subgraph, in the nearest outer graph that has one.</summary>
    public TensorProto? Initializer(string name)
    {
        EnsureIndex();
        return _initializers!.GetValueOrDefault(name) ?? Parent?.Initializer(name);
    }

    /// <summary>The graph (this one or an outer one) whose initializer <see cref="Initializer"/> returns.</summary>
    private OnnxGraph? OwnerOf(string name) => IndexOfInitializer(name) >= 0 ? this : Parent?.OwnerOf(name);

    public bool IsGraphOutput(string value) => Proto.Output.Any(o => o.Name == value);

    /// <summary>Adds an initializer, or replaces the one of the same name (in a subgraph: where that one lives).</summary>
    public void SetInitializer(TensorProto tensor)
    {
        if (IndexOfInitializer(tensor.Name) < 0 && Parent?.OwnerOf(tensor.Name) is { } owner)
        {
            owner.SetInitializer(tensor);
            Invalidate();
            return;
        }
        var index = IndexOfInitializer(tensor.Name);
        if (index >= 0) Proto.Initializer[index] = tensor;
        else Proto.Initializer.Add(tensor);
        Invalidate();
    }

    /// <summary>Removes the initializer of that name here or, in a subgraph, where the name resolves to.</summary>
    public bool RemoveInitializer(string name)
    {
        var index = IndexOfInitializer(name);
        if (index < 0)
        {
            if (Parent?.OwnerOf(name) is not { } owner) return false;
            owner.RemoveInitializer(name);
            Invalidate();
            return true;
        }
        Proto.Initializer.RemoveAt(index);
        Invalidate();
        return true;
    }

    private int IndexOfInitializer(string name)
    {
        for (var i = 0; i < Proto.Initializer.Count; i++)
            if (Proto.Initializer[i].Name == name) return i;
        return -1;
    }

    public void AddNode(NodeProto node)
    {
        Proto.Node.Add(node);
        Invalidate();
    }

    public void InsertBefore(NodeProto anchor, NodeProto node)
    {
        Proto.Node.Insert(IndexOf(anchor), node);
        Invalidate();
    }

    public void InsertAfter(NodeProto anchor, NodeProto node)
    {
        Proto.Node.Insert(IndexOf(anchor) + 1, node);
        Invalidate();
    }

    /// <summary>Puts <paramref name="replacements"/> where <paramref name="node"/> was, in that order.</summary>
    public void ReplaceNode(NodeProto node, params NodeProto[] replacements)
    {
        var index = IndexOf(node);
        Proto.Node.RemoveAt(index);
        for (var i = 0; i < replacements.Length; i++) Proto.Node.Insert(index + i, replacements[i]);
        Invalidate();
    }

    public void RemoveNode(NodeProto node)
    {
        Proto.Node.RemoveAt(IndexOf(node));
        Invalidate();
    }

    /// <summary>
    /// Removes a single-output pass-through node (Identity, Dropout, a folded op) and re-wires its consumers to its
    /// first input. When its output is a graph output, the producer of its input is renamed instead so the graph's
    /// interface keeps its names.
    /// </summary>
    public void Bypass(NodeProto node)
    {
        var input = node.Input[0];
        var output = node.Output[0];
        RemoveNode(node);
        if (IsGraphOutput(output) && !IsGraphOutput(input) && Producer(input) is { } producer && Initializer(input) is null && !Proto.Input.Any(i => i.Name == input))
        {
            RenameValue(input, output);
            return;
        }
        ReplaceUses(output, input);
    }

    /// <summary>Points every consumer (and graph output) of <paramref name="oldName"/> at <paramref name="newName"/>.</summary>
    public void ReplaceUses(string oldName, string newName)
    {
        foreach (var n in Proto.Node)
            for (var i = 0; i < n.Input.Count; i++)
                if (n.Input[i] == oldName) n.Input[i] = newName;
        foreach (var o in Proto.Output)
            if (o.Name == oldName) o.Name = newName;
        Invalidate();
    }

    /// <summary>Renames a value everywhere: its producer's output, its consumers and value_info.</summary>
    public void RenameValue(string oldName, string newName)
    {
        foreach (var n in Proto.Node)
        {
            for (var i = 0; i < n.Input.Count; i++) if (n.Input[i] == oldName) n.Input[i] = newName;
            for (var i = 0; i < n.Output.Count; i++) if (n.Output[i] == oldName) n.Output[i] = newName;
        }
        foreach (var v in Proto.ValueInfo) if (v.Name == oldName) v.Name = newName;
        Invalidate();
    }

    /// <summary>A name not used by any value, node or initializer in the model's graphs (subgraphs included: no shadowing).</summary>
    public string FreshName(string prefix)
    {
        if (Parent is not null) return Root.FreshName(prefix);
        EnsureIndex();
        var name = prefix;
        while (_names!.Contains(name)) name = $"{prefix}_{++_nameCounter}";
        _names.Add(name);
        return name;
    }

    /// <summary>
    /// Reorders nodes so each comes after the producers of its inputs (Kahn's algorithm, stable: ties keep the
    /// original order). Throws on a cycle or an input that nothing produces.
    /// </summary>
    public void TopologicalSort()
    {
        var nodes = Proto.Node.ToList();
        var available = AvailableAtStart();
        var producerIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < nodes.Count; i++)
            foreach (var o in nodes[i].Output)
                if (o.Length > 0) producerIndex[o] = i;

        var pending = new int[nodes.Count];
        var dependents = Enumerable.Range(0, nodes.Count).Select(_ => new List<int>()).ToArray();
        for (var i = 0; i < nodes.Count; i++)
        {
            foreach (var input in NodeInputs(nodes[i]))
            {
                if (input.Length == 0 || available.Contains(input)) continue;
                if (!producerIndex.TryGetValue(input, out var p))
                    throw new OnnxFormatException($"node '{Describe(nodes[i])}' uses '{input}', which no node, initializer or graph input produces");
                pending[i]++;
                dependents[p].Add(i);
            }
        }
        var ready = new PriorityQueue<int, int>();
        for (var i = 0; i < nodes.Count; i++) if (pending[i] == 0) ready.Enqueue(i, i);
        var order = new List<NodeProto>(nodes.Count);
        while (ready.TryDequeue(out var i, out _))
        {
            order.Add(nodes[i]);
            foreach (var d in dependents[i])
                if (--pending[d] == 0) ready.Enqueue(d, d);
        }
        if (order.Count != nodes.Count)
        {
            var stuck = nodes.Where((_, i) => pending[i] > 0).Select(Describe).Take(5);
            throw new OnnxFormatException($"graph '{Proto.Name}' has a cycle through node(s) {string.Join(", ", stuck)}");
        }
        Proto.Node.Clear();
        Proto.Node.AddRange(order);
        Invalidate();
    }

    /// <summary>
    /// Checks the stored order is topological (the ONNX spec requires it): every input is a graph input, an
    /// initializer, or the output of an earlier node. Names the first offender.
    /// </summary>
    public void ValidateOrder(IEnumerable<string>? outerScope = null)
    {
        var available = AvailableAtStart();
        if (outerScope is not null) available.UnionWith(outerScope);
        var producedLater = new HashSet<string>(Proto.Node.SelectMany(n => n.Output), StringComparer.Ordinal);
        foreach (var node in Proto.Node)
        {
            foreach (var a in node.Attribute)
            {
                if (a.G is not null) new OnnxGraph(a.G).ValidateOrder(available);
                foreach (var g in a.Graphs) new OnnxGraph(g).ValidateOrder(available);
            }
            foreach (var input in node.Input)
            {
                if (input.Length == 0 || available.Contains(input)) continue;
                throw new OnnxFormatException(producedLater.Contains(input)
                    ? $"node '{Describe(node)}' uses '{input}' before it is produced (nodes are not in topological order, or there is a cycle)"
                    : $"node '{Describe(node)}' uses '{input}', which no node, initializer or graph input produces");
            }
            foreach (var o in node.Output) if (o.Length > 0) available.Add(o);
        }
        foreach (var o in Proto.Output)
            if (!available.Contains(o.Name))
                throw new OnnxFormatException($"graph output '{o.Name}' is not produced by any node");
    }

    /// <summary>Removes nodes whose outputs reach no graph output, then initializers nothing uses. Returns nodes removed.</summary>
    public int RemoveDeadNodes()
    {
        var live = new HashSet<string>(GraphOutputNames, StringComparer.Ordinal);
        var keep = new List<NodeProto>();
        for (var i = Proto.Node.Count - 1; i >= 0; i--)
        {
            var node = Proto.Node[i];
            if (!node.Output.Any(live.Contains)) continue;
            keep.Add(node);
            foreach (var input in NodeInputs(node)) live.Add(input);
        }
        keep.Reverse();
        var removed = Proto.Node.Count - keep.Count;
        Proto.Node.Clear();
        Proto.Node.AddRange(keep);
        for (var i = Proto.Initializer.Count - 1; i >= 0; i--)
            if (!live.Contains(Proto.Initializer[i].Name)) Proto.Initializer.RemoveAt(i);
        for (var i = Proto.ValueInfo.Count - 1; i >= 0; i--)
            if (!live.Contains(Proto.ValueInfo[i].Name)) Proto.ValueInfo.RemoveAt(i);
        Invalidate();
        return removed;
    }

    /// <summary>The static shape of a value from graph inputs/outputs, value_info or initializer dims; null entries are symbolic.</summary>
    public long?[]? Shape(string value)
    {
        if (Initializer(value) is { } init) return init.Dims.Select(d => (long?)d).ToArray();
        var info = Proto.Input.Concat(Proto.Output).Concat(Proto.ValueInfo).FirstOrDefault(v => v.Name == value);
        var shape = info?.Type?.TensorType?.Shape;
        if (shape is null) return null;
        return shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? (long?)d.DimValue : null).ToArray();
    }

    /// <summary>Inputs of a node including values its subgraphs (If/Loop/Scan bodies) take from this scope.</summary>
    public static IEnumerable<string> NodeInputs(NodeProto node)
    {
        foreach (var i in node.Input) if (i.Length > 0) yield return i;
        foreach (var a in node.Attribute)
        {
            if (a.G is not null) foreach (var i in OuterScopeInputs(a.G)) yield return i;
            foreach (var g in a.Graphs) foreach (var i in OuterScopeInputs(g)) yield return i;
        }
    }

    private static IEnumerable<string> OuterScopeInputs(GraphProto graph)
    {
        var defined = new HashSet<string>(graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(i => i.Name)), StringComparer.Ordinal);
        foreach (var n in graph.Node) foreach (var o in n.Output) defined.Add(o);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            foreach (var i in NodeInputs(n))
                if (!defined.Contains(i) && seen.Add(i)) yield return i;
        foreach (var o in graph.Output)
            if (!defined.Contains(o.Name) && seen.Add(o.Name)) yield return o.Name;
    }

    public static string Describe(NodeProto node) => string.IsNullOrEmpty(node.Name) ? $"{node.OpType}->{string.Join(",", node.Output)}" : node.Name;

    private HashSet<string> AvailableAtStart()
    {
        var available = new HashSet<string>(StringComparer.Ordinal);
        foreach (var i in Proto.Input) available.Add(i.Name);
        foreach (var i in Proto.Initializer) available.Add(i.Name);
        foreach (var s in Proto.SparseInitializer) if (s.Values is not null) available.Add(s.Values.Name);
        return available;
    }

    private static void AddNames(GraphProto graph, HashSet<string> names)
    {
        foreach (var t in graph.Initializer) names.Add(t.Name);
        foreach (var v in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo)) names.Add(v.Name);
        foreach (var node in graph.Node)
        {
            if (node.Name.Length > 0) names.Add(node.Name);
            foreach (var o in node.Output) if (o.Length > 0) names.Add(o);
            foreach (var a in node.Attribute) foreach (var g in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)) AddNames(g, names);
        }
    }

    private int IndexOf(NodeProto node)
    {
        for (var i = 0; i < Proto.Node.Count; i++)
            if (ReferenceEquals(Proto.Node[i], node)) return i;
        throw new ArgumentException($"node '{Describe(node)}' is not in graph '{Proto.Name}'");
    }

    private void EnsureIndex()
    {
        if (_producers is not null) return;
        _producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        _consumers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        _initializers = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        _names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in Proto.Initializer) { _initializers[t.Name] = t; _names.Add(t.Name); }
        foreach (var i in Proto.Input) _names.Add(i.Name);
        foreach (var o in Proto.Output) _names.Add(o.Name);
        foreach (var v in Proto.ValueInfo) _names.Add(v.Name);
        foreach (var node in Proto.Node)
        {
            if (node.Name.Length > 0) _names.Add(node.Name);
            foreach (var o in node.Output) { if (o.Length > 0) { _producers[o] = node; _names.Add(o); } }
            if (Parent is null) foreach (var a in node.Attribute) foreach (var g in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)) AddNames(g, _names);
            foreach (var input in NodeInputs(node).Distinct())
            {
                if (!_consumers.TryGetValue(input, out var list)) _consumers[input] = list = [];
                list.Add(node);
            }
        }
    }
}
