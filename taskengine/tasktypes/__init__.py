"""The built-in task types: DELETE_BY_QUERY, COPY_FIELD_DATA, EDIT_FIELD_DATA and
UPDATE_PUBLISH_STATUS (see docs/task-types.md)."""
