// The OpenAPI 3 description of the API (docs/openapi.json), embedded at build time and served
// at GET /v1/openapi.json.
#ifndef TALLY_API_OPENAPI_H_
#define TALLY_API_OPENAPI_H_

#include <string_view>

namespace tally {

// The bytes of docs/openapi.json as of the build.
std::string_view OpenApiJson();

}  // namespace tally

#endif  // TALLY_API_OPENAPI_H_
