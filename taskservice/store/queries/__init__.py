"""Every runtime SQL statement of the service, named after the repository method that runs it.

Bulk statements take their rows as one JSON array (`$1::text::jsonb`) and expand it with
`jsonb_to_recordset`, so a batch of any size costs one round trip and one parameter.
Every statement that changes a task's status checks the prior status in its WHERE clause.

The statements live in one module per area; this package exposes them all under one name,
so repositories read `queries.<statement>` whatever the area.
"""

from taskservice.store.queries.api import *  # noqa: F403
from taskservice.store.queries.pipeline import *  # noqa: F403
from taskservice.store.queries.recovery import *  # noqa: F403
from taskservice.store.queries.schedules import *  # noqa: F403
