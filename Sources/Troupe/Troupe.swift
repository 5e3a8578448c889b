// The umbrella module: `import Troupe` gives the whole framework.
@_exported import TroupeAgents
@_exported import TroupeCore
@_exported import TroupeMCP
@_exported import TroupeModels
@_exported import TroupePostgres
@_exported import TroupeSQLite
@_exported import TroupeStore
@_exported import TroupeTools
