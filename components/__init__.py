"""Import each component from its own module (`components.service`, `.router`, `.endpoint`, `.cluster`,
`.workspace`, `.image`; specs from `components.spec`): the package exports nothing, so that `check` and
`local` run without Pulumi's SDK installed."""
