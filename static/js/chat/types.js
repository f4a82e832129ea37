// The JSON shapes the chat app receives: the page's initial data (conversations/views.py) and the
// dicts of conversations/presenters.py carried by WebSocket events (conversations/consumers.py).

/** @typedef {"queued" | "running" | "completed" | "cancelled" | "failed"} MessageStatus */

/**
 * @typedef {object} ChatMessage
 * @property {string} id   for an assistant message, also its generation id
 * @property {string | null} parent
 * @property {"user" | "assistant" | "system"} role
 * @property {string} content
 * @property {number} seq   the last stream event whose text `content` includes (watch after it)
 * @property {MessageStatus} status
 * @property {string | null} finish_reason
 * @property {string | null} error
 * @property {string} model
 * @property {1 | -1 | null} [feedback]   the user's thumbs up or down on a reply
 * @property {Attachment[]} [attachments]   a user message's files
 * @property {Source[]} [sources]   a reply's passages of the chat's documents, in the order the model saw them
 * @property {string} created_at
 */

/**
 * @typedef {object} Attachment
 * @property {string} id
 * @property {string} name
 * @property {string} kind   text, markdown, code or pdf
 * @property {number} size_bytes
 */

/**
 * @typedef {object} Source
 * @property {string} document
 * @property {string} name
 * @property {number} part
 * @property {number | null} page
 * @property {string} text
 */

/**
 * One step of the branch shown: a message with its place among its siblings (for `< 2/3 >`).
 * @typedef {ChatMessage & {sibling_index: number, sibling_count: number, sibling_ids: string[]}} BranchEntry
 */

/**
 * @typedef {object} Conversation
 * @property {string} id
 * @property {string} title
 * @property {string} model
 * @property {string} system_prompt
 * @property {string | null} [project]   the id of its project
 * @property {{temperature?: number, max_tokens?: number}} [params]   the chat's sampling settings
 * @property {boolean} pinned
 * @property {boolean} archived
 * @property {string} created_at
 * @property {string} updated_at
 */

/**
 * @typedef {object} ModelInfo
 * @property {string} name
 * @property {string} display_name
 */

/**
 * @typedef {object} ChatData
 * @property {Conversation | null} conversation
 * @property {BranchEntry[]} messages
 * @property {Conversation[]} conversations
 * @property {string | null} conversations_next
 * @property {ModelInfo[]} models
 * @property {{id: string, name: string}[]} projects   the user's projects
 * @property {string | null} project   the page's project: a new chat starts in it
 * @property {string} default_model
 * @property {string} logo_url
 * @property {string} login_url
 * @property {string} billing_url
 * @property {string} documents_url   where a file for the next message is uploaded
 * @property {number} documents_max_files   per message
 * @property {number} documents_max_bytes   per file
 */

export {};
