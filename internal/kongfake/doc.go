// Package kongfake is an in-memory Kong Admin API (open source, DB mode) for tests, worth trusting
// because it refuses what Kong refuses.
//
// Every request is first checked against Kong's published OpenAPI description of the 3.9 Admin
// API (testdata/admin-api-oss-3.9.yaml, embedded, with its service-plugins path typo corrected in
// the loaded copy): method, path, declared query parameters and their schemas, body media type.
// Anything the description does not allow fails the test that owns the fake (t.Errorf) and is
// answered 400. The description's bodies are loose ("type: object"), so Kong's own rules come on
// top: a plugin needs a name Kong has enabled, unknown fields are refused, ip-restriction and
// request-termination configs are checked field by field with Kong's defaults filled in, one
// plugin of a name per scope and unique instance names (409), foreign keys must exist (400),
// unknown parents in a path are 404, DELETE is 204 even when nothing was there, PATCH merges the
// config but replaces arrays whole, lists page with size (1–1000, default 100) and offset/next and
// filter by tags (a,b = all of; a/b = any of). A request Kong would refuse for its content
// (schema violation, unknown field) also fails the test unless Options.AllowSchemaViolations.
//
// Faults are injected on demand (Server.Inject): a status with Retry-After, a delay, a dropped
// connection, limited to a method, a path prefix, writes, or a number of requests. DB-less mode
// (Options.DBLess, Server.SetDBLess) answers every write 405 as a DB-less Kong does.
//
// Entities can be seeded and inspected from Go (AddService, AddRoute, AddConsumer, AddPlugin,
// EditPlugin, Plugins) without going through HTTP, and every request is recorded (Requests).
package kongfake
