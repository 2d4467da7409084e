// The store persists and returns the broker's records, so its users see them with it.
@_exported import CivitasModel
