// Builds the Jaeger all-in-one binary (`cmd/jaeger`: OTLP receivers, in-memory storage, query API
// and UI) for the local platform (deploy/scripts/ensure-jaeger.sh). Jaeger's own go.mod has a
// `replace`, which `go install module@version` refuses, so the binary is built from this module
// instead; the replace below repeats upstream's.
module dbaas.local/tools/jaeger

go 1.24.6

require github.com/jaegertracing/jaeger v1.75.0

replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
