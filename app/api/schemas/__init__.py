"""The HTTP contract as pydantic models: what every JSON route answers, for
`response_model=` and `/openapi.json`. Request bodies the routes parse by hand (size
caps, the guards in app.api.body, the native 400) are documented here too."""
