"""The CRM's services: customers, the pipeline and its board, lists and their filters, the
activity timeline, segments, custom fields and lead scoring, a module each:

    fields      field checks shared by forms, the API and imports; custom fields
    stages      the pipeline's stages
    scoring     lead scoring rules and scores (nightly: the schedule of the nightly rescoring)
    activities  the timeline
    search      customer lists: filters, sorts, search, cursors
    board       the pipeline board
    customers   adding, editing, deleting and merging customers
    segments    saved filters

Each lower module knows nothing of those after it, so nothing imports in a circle. CSV import
and export are in crm/customers/imports.py, the jobs in crm/customers/jobs.py.

Each function validates, writes, records who did it and publishes what happened; none commits
(the request, job or subscriber wrapper does). Views and the API call these functions alike,
through this package's names (`services.create_customer`).
"""

from __future__ import annotations

from crm.customers.services import scoring
from crm.customers.services.activities import (
    TASK_DUES,
    access_activity,
    add_activity,
    complete_task,
    describe_activity,
    list_activities,
    list_tasks,
    log_automatic,
    readable_messages,
    source_label,
    task_counts,
    tasks_due_today,
    text_hidden,
    touch_contact,
)
from crm.customers.services.board import (
    BOARD_STEP,
    Card,
    Move,
    StageTotal,
    board_column,
    board_columns,
    find_move,
    move_customer,
    read_board,
    stage_totals,
)
from crm.customers.services.customers import (
    DuplicateCustomerError,
    access_customer,
    create_customer,
    customer_by_phone,
    delete_customer,
    merge_customers,
    resolve_customer,
    tag_changes,
    update_customer,
    whatsapp_conversation_id,
)
from crm.customers.services.fields import (
    AMOUNT_LIMIT,
    MAX_TAGS,
    access_field,
    check_amount,
    check_bool,
    check_custom_fields,
    check_custom_value,
    check_datetime,
    check_email,
    check_id,
    check_int,
    check_phone,
    check_tags,
    check_text,
    create_field_definition,
    delete_field_definition,
    field_definitions_by_key,
    list_field_definitions,
    not_found,
    organization_timezone,
    update_field_definition,
)
from crm.customers.services.search import (
    PAGE_SCAN,
    SCORE_LIMIT,
    SORTS,
    CustomerFilters,
    count_customers,
    filtered_query,
    list_customers,
    parse_filters,
)
from crm.customers.services.segments import (
    access_segment,
    create_segment,
    delete_segment,
    list_segments,
    segment_customers,
    segment_filters,
    update_segment,
)
from crm.customers.services.stages import (
    DEFAULT_STAGES,
    access_stage,
    check_stage,
    create_stage,
    delete_stage,
    ensure_default_stages,
    list_stages,
    reorder_stages,
    update_stage,
)

__all__ = [
    "AMOUNT_LIMIT",
    "BOARD_STEP",
    "DEFAULT_STAGES",
    "MAX_TAGS",
    "PAGE_SCAN",
    "SCORE_LIMIT",
    "SORTS",
    "TASK_DUES",
    "Card",
    "CustomerFilters",
    "DuplicateCustomerError",
    "Move",
    "StageTotal",
    "access_activity",
    "access_customer",
    "access_field",
    "access_segment",
    "access_stage",
    "add_activity",
    "board_column",
    "board_columns",
    "check_amount",
    "check_bool",
    "check_custom_fields",
    "check_custom_value",
    "check_datetime",
    "check_email",
    "check_id",
    "check_int",
    "check_phone",
    "check_stage",
    "check_tags",
    "check_text",
    "complete_task",
    "count_customers",
    "create_customer",
    "create_field_definition",
    "create_segment",
    "create_stage",
    "customer_by_phone",
    "delete_customer",
    "delete_field_definition",
    "delete_segment",
    "delete_stage",
    "describe_activity",
    "ensure_default_stages",
    "field_definitions_by_key",
    "filtered_query",
    "find_move",
    "list_activities",
    "list_customers",
    "list_field_definitions",
    "list_segments",
    "list_stages",
    "list_tasks",
    "log_automatic",
    "merge_customers",
    "move_customer",
    "not_found",
    "organization_timezone",
    "parse_filters",
    "read_board",
    "readable_messages",
    "reorder_stages",
    "resolve_customer",
    "scoring",
    "segment_customers",
    "segment_filters",
    "source_label",
    "stage_totals",
    "tag_changes",
    "task_counts",
    "tasks_due_today",
    "text_hidden",
    "touch_contact",
    "update_customer",
    "update_field_definition",
    "update_segment",
    "update_stage",
    "whatsapp_conversation_id",
]
