import PackagePlugin

/// Embeds the target's openapi.yaml as `OpenAPIDocument.yaml`, so that `troupe serve` serves the
/// very document its types were generated from, without files beside the binary.
@main
struct EmbedOpenAPIDocument: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget,
            let document = target.sourceFiles.first(where: { $0.url.lastPathComponent == "openapi.yaml" })
        else { return [] }
        let output = context.pluginWorkDirectoryURL.appending(path: "OpenAPIDocument.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(document.url.lastPathComponent)",
                executable: try context.tool(named: "EmbedFile").url,
                arguments: [document.url.path(), output.path(), "OpenAPIDocument"],
                inputFiles: [document.url],
                outputFiles: [output])
        ]
    }
}
