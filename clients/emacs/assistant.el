;;; assistant.el --- Chat, edit and summarize with the assistantd daemon  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The assistantd authors
;; SPDX-License-Identifier: MIT

;; Author: The assistantd authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: tools, convenience
;; URL: https://github.com/OWNER/assistantd

;;; Commentary:

;; A thin client of assistantd, the daemon that keeps the chats, keys and providers of
;; every client (the shell, Neovim, the command line) in one place.  It talks to the
;; daemon over its Unix socket with the `jsonrpc.el' that ships with Emacs; answers
;; stream into buffers asynchronously, so Emacs never waits for one.
;;
;; Commands (all autoloaded):
;;   `assistant-chat'            a chat buffer that streams answers and continues
;;   `assistant-ask-region'      ask about the region; the answer opens in a chat buffer
;;   `assistant-replace-region'  replace the region with the answer (one undo step)
;;   `assistant-summarize-url'   summarize the URL at point into a chat buffer
;;   `assistant-conversations'   pick a stored conversation and continue it
;;   `assistant-cancel'          cancel the running request (C-c C-k in a chat buffer)
;;   `assistant-attach-file'     attach a file to a chat's next message (C-c C-a there)
;;   `assistant-attach-buffer'   attach a buffer (its text while it has unsaved changes)
;;   `assistant-attach-clear'    drop the attachments queued
;; With a prefix argument, `assistant-chat', `assistant-ask-region',
;; `assistant-replace-region' and `assistant-summarize-url' ask for a role (a named
;; prompt the daemon keeps); `assistant-default-role' applies otherwise.
;;
;; Layout: assistant-rpc.el is the connection (and the daemon's autostart),
;; assistant-chat.el the chat buffers, this file the commands.  See README.md.

;;; Code:

(require 'assistant-rpc)
(require 'assistant-chat)
(require 'seq)
(require 'subr-x)
(require 'thingatpt)

(defcustom assistant-display-function #'pop-to-buffer
  "How chat buffers of asks, summaries and picked conversations are shown.
`assistant-chat' uses the selected window."
  :type 'function
  :group 'assistant)

(defcustom assistant-replace-role "code-edit"
  "Role of `assistant-replace-region' when it is given none.
The daemon's built-in \"code-edit\" asks for the replacement text alone; a
`[roles.code-edit]' table in the daemon's config.toml changes it for every
client."
  :type 'string
  :group 'assistant)

;;;; Roles

(defvar assistant--roles nil "Role names last listed by the daemon (roles/list).")
(defvar assistant--roles-time 0 "When `assistant--roles' was last asked for.")

(defun assistant--refresh-roles ()
  "Ask the daemon for its roles in the background (at most once a minute)."
  (when (> (- (float-time) assistant--roles-time) 60)
    (setq assistant--roles-time (float-time))
    (assistant-rpc-request
     "roles/list" nil
     (lambda (err result)
       (if err
           (setq assistant--roles-time 0)
         (setq assistant--roles
               (mapcar (lambda (r) (cons (plist-get r :name) (plist-get r :description)))
                       (plist-get result :roles)))))
     :internal t)))

(defun assistant--role-table (string pred action)
  "Completion table of the daemon's roles (STRING, PRED, ACTION as usual).
It reads `assistant--roles' each time: a list that arrives while the
minibuffer is open still completes."
  (if (eq action 'metadata)
      '(metadata (category . assistant-role)
                 (annotation-function . assistant--role-annotation))
    (complete-with-action action assistant--roles string pred)))

(defun assistant--role-annotation (name)
  "The description of role NAME, for completion."
  (let ((desc (cdr (assoc name assistant--roles))))
    (if desc (concat "  " desc) "")))

(defun assistant-read-role (&optional default)
  "Read a role name, completing over the daemon's roles.
Empty input gives DEFAULT (nil: no role)."
  (assistant--refresh-roles)
  (let ((name (completing-read (format-prompt "Role" default) #'assistant--role-table
                               nil nil nil nil default)))
    (if (string-empty-p name) nil name)))

(defun assistant--role-arg (&optional default)
  "The role of an interactive command: with a prefix argument, read (DEFAULT).
Without one, nil: the command applies its own default."
  (and current-prefix-arg (assistant-read-role default)))

;;;; Chat

;;;###autoload
(defun assistant-chat (&optional role)
  "Open a new chat buffer in the selected window.
Write under \"## You\" and send with \\<assistant-chat-mode-map>\\[assistant-chat-send]: the
answer streams in, and the next message continues the conversation.  ROLE
\(asked for with a prefix argument, else `assistant-default-role') starts the
conversation."
  (interactive (list (assistant--role-arg assistant-default-role)))
  (assistant-chat-open nil nil (or role assistant-default-role)))

;;;; The region

(defun assistant--region-name (beg end)
  "A name for the text from BEG to END: the buffer's file name and its lines."
  (format "%s:%d-%d"
          (if buffer-file-name (file-name-nondirectory buffer-file-name) (buffer-name))
          (line-number-at-pos beg) (line-number-at-pos (max beg (1- end)))))

(defun assistant--language ()
  "The current major mode as a Markdown code fence's language."
  (string-remove-suffix "-ts" (string-remove-suffix "-mode" (symbol-name major-mode))))

(defun assistant--region-args (prompt default-role)
  "Return a region command's BEG, END, text read with PROMPT, and role.
DEFAULT-ROLE is the role offered first with a prefix argument."
  (unless (use-region-p)
    (user-error "No region"))
  (let ((role (assistant--role-arg default-role)))
    (list (region-beginning) (region-end) (read-string prompt) role)))

;;;###autoload
(defun assistant-ask-region (beg end question &optional role)
  "Ask QUESTION about the text from BEG to END.
The text goes along as the message's context; the answer streams into a chat
buffer (shown with `assistant-display-function') where the conversation can
continue.  ROLE: see `assistant-chat'."
  (interactive (assistant--region-args "Ask about the region: " assistant-default-role))
  (let* ((text (buffer-substring-no-properties beg end))
         (name (assistant--region-name beg end))
         (shown (format "%s\n\n```%s\n%s\n```" question (assistant--language)
                        (string-remove-suffix "\n" text)))
         (buf (assistant-chat-open nil assistant-display-function
                                   (or role assistant-default-role))))
    (assistant-chat-run buf shown "chat/send"
                        (list :message question
                              :context (vector (list :name name :text text))))
    buf))

(defun assistant--unfence (text)
  "TEXT without the code fence around all of it (models add them unasked)."
  (if (string-match "\\`[ \t\n]*```[^\n]*\n\\(\\(?:.\\|\n\\)*?\\)\n?```[ \t\n]*\\'" text)
      (match-string 1 text)
    text))

(defun assistant--apply (start stop original text)
  "Replace START..STOP (markers) with TEXT as one undo step of its own.
The end of line that ended ORIGINAL is kept (or not) as it was."
  (with-current-buffer (marker-buffer start)
    (setq text (assistant--unfence text))
    (cond ((and (string-suffix-p "\n" original) (not (string-suffix-p "\n" text)))
           (setq text (concat text "\n")))
          ((and (not (string-suffix-p "\n" original)) (string-suffix-p "\n" text))
           (setq text (string-remove-suffix "\n" text))))
    ;; The answer may land while the user types (keystrokes in a row share an undo
    ;; step): close that step first, and ours after it.
    (undo-boundary)
    (save-excursion
      (goto-char start)
      (delete-region start stop)
      (insert text))
    (undo-boundary)))

;;;###autoload
(defun assistant-replace-region (beg end instruction &optional role)
  "Replace the text from BEG to END with the answer to INSTRUCTION.
The text goes along as context; it is replaced once, when the answer is
complete, as a single undo step.  A failed or cancelled request (see
`assistant-cancel') leaves it alone.  ROLE (asked for with a prefix argument)
defaults to `assistant-replace-role'.  Return the request."
  (interactive (assistant--region-args "Replace the region with: " assistant-replace-role))
  (let* ((role (or role assistant-replace-role))
         (original (buffer-substring-no-properties beg end))
         (start (copy-marker beg t))    ; text typed at either edge stays outside
         (stop (copy-marker end nil))
         (chars 0)
         (params (assistant-rpc-params
                  :message instruction
                  :role role
                  :model assistant-model
                  :context (vector (list :name (assistant--region-name beg end)
                                         :text original)))))
    (deactivate-mark)
    (prog1
        (assistant-rpc-request
         "chat/send" params
         (lambda (err result)
           (cond
            ((and err (not (eql (plist-get err :code) assistant-rpc-cancelled)))
             (message "assistant: %s (the text is unchanged)" (assistant-rpc-describe err)))
            ((or err (equal (plist-get result :finish_reason) "cancelled"))
             (message "assistant: cancelled; the text is unchanged"))
            ((not (buffer-live-p (marker-buffer start)))
             (message "assistant: the buffer is gone; nothing replaced"))
            (t
             (assistant--apply start stop original (plist-get result :text))
             (message "assistant: replaced (%s undoes it)"
                      (substitute-command-keys "\\[undo]"))))
           (set-marker start nil)
           (set-marker stop nil))
         :on-notify
         (lambda (method p)
           (when (equal method "chat/delta")
             (setq chars (+ chars (length (plist-get p :text))))
             (message "assistant: writing... %d chars (M-x assistant-cancel stops it)"
                      chars))))
      (message "assistant: thinking... (M-x assistant-cancel stops it)"))))

;;;; Summaries

(defun assistant--url-at-point ()
  "The http(s) URL at point, or nil."
  (let ((url (thing-at-point 'url t)))
    (when (and url (string-match-p "\\`https?://" url))
      (replace-regexp-in-string "[.,;:!?']+\\'" "" url))))

;;;###autoload
(defun assistant-summarize-url (url &optional role)
  "Summarize the web page at URL (interactively: the URL at point, or asked for).
The daemon fetches and summarizes it; its stages show in the echo area and the
summary streams into a chat buffer.  The summary is a stored conversation:
follow-up questions in that buffer continue it.  ROLE (asked for with a prefix
argument) replaces the daemon's \"summarize\" role."
  (interactive
   (let ((role (assistant--role-arg "summarize")))
     (list (or (assistant--url-at-point) (read-string "Summarize URL: ")) role)))
  (unless (string-match-p "\\`https?://" url)
    (user-error "Not an http(s) URL: %s" url))
  (let ((buf (assistant-chat-open nil assistant-display-function)))
    (assistant-chat-run buf (concat "Summarize " url) "summarize/url"
                        (assistant-rpc-params :url url :role role))
    (message "assistant: fetching %s" url)
    buf))

;;;; Stored conversations

(defun assistant-open-conversation (id)
  "Open stored conversation ID in a chat buffer, to read and continue it."
  (assistant-rpc-request
   "conversations/get" (list :id id)
   (lambda (err conv)
     (if err
         (message "assistant: %s" (assistant-rpc-describe err))
       (assistant-chat-open conv assistant-display-function)))))

(defun assistant--conversation-candidates (convs)
  "Completion candidates for CONVS: (STRING . CONVERSATION), newest first."
  (mapcar (lambda (c)
            (let ((title (assistant-chat-title c)))
              (cons (format "%s  %s  (%s)  %s"
                            (assistant-chat-time (plist-get c :updated_at))
                            (or title "(untitled)")
                            (let ((n (or (plist-get c :message_count) 0)))
                              (format (if (= n 1) "%d message" "%d messages") n))
                            (plist-get c :id))
                    c)))
          convs))

(defun assistant--pick-conversation (convs)
  "Read one of CONVS (newest first) and open it."
  (let* ((cands (assistant--conversation-candidates convs))
         (table (lambda (string pred action)
                  (if (eq action 'metadata)
                      '(metadata (category . assistant-conversation)
                                 (display-sort-function . identity)
                                 (cycle-sort-function . identity))
                    (complete-with-action action cands string pred))))
         (choice (let ((inhibit-quit nil))
                   (with-local-quit
                     (completing-read "Conversation: " table nil t)))))
    (when-let ((conv (cdr (assoc choice cands))))
      (assistant-open-conversation (plist-get conv :id)))))

;;;###autoload
(defun assistant-conversations (&optional query)
  "Pick a stored conversation (newest first) and continue it in a chat buffer.
With a prefix argument, search for QUERY in titles and messages first."
  (interactive (list (and current-prefix-arg (read-string "Search conversations: "))))
  (assistant-rpc-request
   "conversations/list"
   (assistant-rpc-params :limit 200 :query (and query (not (string-empty-p query)) query))
   (lambda (err result)
     (let ((convs (append (plist-get result :conversations) nil)))
       (cond (err (message "assistant: %s" (assistant-rpc-describe err)))
             ((null convs) (message "assistant: no stored conversations"))
             ;; Not from the process filter: read in the main loop, where C-g works.
             (t (run-at-time 0 nil #'assistant--pick-conversation convs)))))))

;;;; Attachments

(defun assistant--attach-target ()
  "Return the chat buffer to attach to, or nil for the next one opened.
This buffer when it is a chat buffer, else one shown in the selected frame."
  (if (assistant-chat-p)
      (current-buffer)
    (seq-find #'assistant-chat-p (mapcar #'window-buffer (window-list)))))

(defun assistant--attach (att)
  "Queue attachment ATT (see `assistant-chat-attach') and say where it went."
  (let ((target (assistant--attach-target)))
    (assistant-chat-attach target att)
    (message "assistant: attached %s to %s" (plist-get att :name)
             (if target
                 (buffer-name target)
               "the next chat (`assistant-chat', `assistant-ask-region')"))))

(defun assistant--default-file ()
  "Return the file `assistant-attach-file' proposes.
This buffer's, or in a chat buffer the file of the buffer visited before it."
  (buffer-file-name (if (assistant-chat-p) (other-buffer (current-buffer) t) (current-buffer))))

;;;###autoload
(defun assistant-attach-file (file)
  "Attach FILE to the next message of a chat.
Interactively, read it with completion; the default is this buffer's file (in a
chat buffer, the file of the buffer visited before).  It goes to this chat
buffer, else a chat buffer shown in the selected frame, else the next chat
buffer `assistant-chat' or `assistant-ask-region' opens, which shows it as a
line \"📎 name\".  The daemon reads the file by its absolute path: text as text,
images (PNG, JPEG, WebP, GIF) as image parts, PDFs as the provider takes them.
When a buffer visits FILE with unsaved changes, its text goes instead."
  (interactive
   (let ((default (assistant--default-file)))
     (list (read-file-name (format-prompt "Attach file"
                                          (and default (file-name-nondirectory default)))
                           nil default t))))
  (let* ((path (expand-file-name file))
         (buf (find-buffer-visiting path)))
    (unless (or buf (file-regular-p path))
      (user-error "Not a file: %s" path))
    (assistant--attach (list :name (file-name-nondirectory path) :path path :buffer buf))))

;;;###autoload
(defun assistant-attach-buffer (buffer)
  "Attach BUFFER to the next message of a chat (see `assistant-attach-file').
While it has unsaved changes, or visits no file, its text goes (as it is when
the message is sent); else its file's path.  Interactively, read its name; the
default is this buffer (in a chat buffer, the one visited before)."
  (interactive
   (list (read-buffer "Attach buffer: "
                      (if (assistant-chat-p) (other-buffer (current-buffer) t) (current-buffer))
                      t)))
  (let* ((buf (get-buffer buffer))
         (file (buffer-file-name buf)))
    (assistant--attach (list :name (if file (file-name-nondirectory file) (buffer-name buf))
                             :path (and file (expand-file-name file))
                             :buffer buf))))

;;;###autoload
(defun assistant-attach-clear ()
  "Drop the attachments queued for this chat (or the one shown, or the next one)."
  (interactive)
  (message "assistant: dropped %d attachment(s)"
           (assistant-chat-detach (assistant--attach-target))))

;;;; Cancelling

;;;###autoload
(defun assistant-cancel ()
  "Cancel this chat buffer's request, else the newest request in flight.
A chat or summary keeps the part already written (the daemon stores it as
partial); a replacement leaves the text as it was."
  (interactive)
  (if (or (assistant-chat-cancel) (assistant-rpc-cancel (assistant-rpc-newest)))
      (message "assistant: cancelling...")
    (message "assistant: nothing to cancel")))

(provide 'assistant)
;;; assistant.el ends here
