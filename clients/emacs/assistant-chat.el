;;; assistant-chat.el --- Chat buffers of assistant.el  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The assistantd authors
;; SPDX-License-Identifier: MIT

;; This file is part of assistant.el; see assistant.el for the package's headers.

;;; Commentary:

;; A chat buffer shows one conversation as Markdown:
;;
;;   # Chat
;;
;;   ## You
;;   the question
;;
;;   ## Assistant
;;
;;   the answer, streamed in as chat/delta notifications arrive
;;
;;   ## You
;;   (the next message goes here; C-c C-c sends it)
;;
;; Two markers keep their places while the user edits: the end of the last "## You"
;; header (the message is everything after it) and the point where the answer streams
;; in.  Inserting a delta is all a notification does, so Emacs stays responsive.
;;
;; Files attached with `assistant-attach-file' (assistant.el) show as "📎 name" lines
;; right under the last "## You" header (the prompt marker moves past them) and go with
;; the next message.

;;; Code:

(require 'assistant-rpc)
(require 'cl-lib)
(require 'iso8601)
(require 'seq)
(require 'subr-x)

(declare-function markdown-mode "markdown-mode" ())

(defcustom assistant-model nil
  "Model for requests; nil uses the daemon's `default_model'."
  :type '(choice (const :tag "The daemon's default" nil) string)
  :group 'assistant)

(defcustom assistant-default-role nil
  "Role of new chats (`assistant-chat', `assistant-ask-region') given none.
A name from the daemon's roles/list; nil sends none.  A prefix argument to
those commands asks for a role instead."
  :type '(choice (const :tag "None" nil) string)
  :group 'assistant)

(defvar-local assistant-chat-conversation-id nil
  "The stored conversation this chat buffer continues (nil: a new one).")
(defvar-local assistant-chat-request nil
  "The request streaming into this chat buffer, or nil.")
(defvar-local assistant-chat-role nil
  "The role a new conversation here starts with (sent with its first message).")
(defvar-local assistant-chat--prompt nil
  "Marker at the end of the last \"## You\" header.")
(defvar-local assistant-chat--answer nil
  "Marker where the answer streams in (it advances past inserted text).")
(defvar-local assistant-chat--streamed 0
  "Characters streamed into the current answer.")
(defvar-local assistant-chat--attached nil
  "Attachments queued for this buffer's next message, oldest first.
Each is a plist (:name NAME :path FILE-OR-NIL :buffer BUFFER-OR-NIL).")
(defvar-local assistant-chat--shown 0
  "How many of `assistant-chat--attached' have their line yet.
One attached while an answer streams shows under the next \"## You\".")
(defvar assistant-chat--pending nil
  "Attachments for the next chat buffer opened (no chat buffer was in sight).")

(defconst assistant-chat--clip "📎 "
  "What starts the line that shows an attachment.")

(defvar assistant-chat-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "C-c C-c") #'assistant-chat-send)
    (define-key map (kbd "C-c C-k") #'assistant-cancel)
    (define-key map (kbd "C-c C-a") #'assistant-attach-file)
    map)
  "Keys of chat buffers.")

(declare-function assistant-cancel "assistant" ())
(declare-function assistant-attach-file "assistant" (file))

(define-minor-mode assistant-chat-mode
  "A chat with the assistantd daemon.
Write under the last \"## You\" and send with \\[assistant-chat-send]; the
answer streams in under \"## Assistant\".  \\[assistant-cancel] cancels it and
keeps the part already written.  \\[assistant-attach-file] attaches a file to
the next message (a \"📎 name\" line shows it).

\\{assistant-chat-mode-map}"
  :lighter (:eval (if (assistant-rpc-running-p assistant-chat-request)
                      " Assistant[streaming]"
                    " Assistant"))
  :keymap assistant-chat-mode-map)

(defun assistant-chat-p (&optional buffer)
  "Non-nil when BUFFER (default: the current one) is a live chat buffer."
  (let ((buf (or buffer (current-buffer))))
    (and (buffer-live-p buf) (buffer-local-value 'assistant-chat-mode buf))))

(defun assistant-chat-busy-p (&optional buffer)
  "Non-nil while a request streams into BUFFER (default: the current one)."
  (with-current-buffer (or buffer (current-buffer))
    (assistant-rpc-running-p assistant-chat-request)))

(defun assistant-chat--insert (text)
  "Insert TEXT at the answer marker; windows (and point) at the end follow it."
  (let* ((at-end (point-max))
         (follow (cl-remove-if-not (lambda (w) (= (window-point w) at-end))
                                   (get-buffer-window-list nil nil t)))
         (point-follows (= (point) at-end)))
    (save-excursion
      (goto-char assistant-chat--answer)
      (insert text))
    (when point-follows (goto-char (point-max)))
    (dolist (w follow) (set-window-point w (point-max)))))

(defun assistant-chat--show (att)
  "Show attachment ATT as a \"📎 name\" line under the last \"## You\"."
  (save-excursion
    (goto-char assistant-chat--prompt)
    (insert "\n" assistant-chat--clip
            (replace-regexp-in-string "\n" " " (plist-get att :name)))
    (set-marker assistant-chat--prompt (point)))
  (setq assistant-chat--shown (1+ assistant-chat--shown)))

(defun assistant-chat--new-prompt ()
  "Open the next \"## You\" after the answer and put point there."
  (assistant-chat--insert "\n\n## You\n")
  (set-marker assistant-chat--prompt (1- assistant-chat--answer))
  (setq assistant-chat--shown 0)
  (mapc #'assistant-chat--show assistant-chat--attached) ; attached while it streamed
  (goto-char (point-max))
  (dolist (w (get-buffer-window-list nil nil t)) (set-window-point w (point-max))))

(defun assistant-chat--finish (buf err result)
  "The request of chat buffer BUF ended with ERR or RESULT."
  (when (buffer-live-p buf)
    (with-current-buffer buf
      (let ((sep (if (> assistant-chat--streamed 0) "\n\n" "")))
        (cond
         ((and err (eql (plist-get err :code) assistant-rpc-cancelled))
          (assistant-chat--insert (concat sep "_[cancelled]_")))
         (err
          (let ((data (plist-get err :data)))
            (when (and (listp data) (plist-get data :conversation_id))
              (setq assistant-chat-conversation-id (plist-get data :conversation_id))))
          (assistant-chat--insert (concat sep "> **error:** " (assistant-rpc-describe err))))
         (t
          (setq assistant-chat-conversation-id
                (or (plist-get result :conversation_id) assistant-chat-conversation-id))
          (let ((title (assistant-chat-title result))) ; a summarized page's
            (when title
              (save-excursion
                (goto-char (point-min))
                (when (looking-at "# Chat$")
                  (replace-match (concat "# " title) t t)))))
          (let ((text (plist-get result :text)))
            (when (and (= assistant-chat--streamed 0) (stringp text) (not (string-empty-p text)))
              (assistant-chat--insert text) ; an answer that came without deltas
              (setq sep "\n\n")))
          (when (equal (plist-get result :finish_reason) "cancelled")
            (assistant-chat--insert (concat sep "_[cancelled]_"))))))
      (setq assistant-chat-request nil)
      (assistant-chat--new-prompt)
      (force-mode-line-update))))

(defun assistant-chat--notify (buf method params)
  "Show notification METHOD with PARAMS of chat buffer BUF's request."
  (cond
   ((equal method "chat/delta")
    (let ((text (plist-get params :text)))
      (when (and (stringp text) (buffer-live-p buf))
        (with-current-buffer buf
          (setq assistant-chat--streamed (+ assistant-chat--streamed (length text)))
          (assistant-chat--insert text)))))
   ((equal method "summarize/progress")
    (message "assistant: %s %s/%s" (plist-get params :stage)
             (or (plist-get params :done) "?") (or (plist-get params :total) "?")))))

(defun assistant-chat-attachment-item (att)
  "The context item attachment ATT sends now, or nil when nothing is left of it.
A buffer with unsaved changes (or no file) goes as its text; else the file's
absolute path goes, for the daemon to read (images and PDFs included)."
  (let ((buf (plist-get att :buffer))
        (path (plist-get att :path)))
    (cond ((and (buffer-live-p buf)
                (with-current-buffer buf
                  (or (not buffer-file-name) (buffer-modified-p)
                      (not (file-readable-p buffer-file-name)))))
           (list :name (plist-get att :name)
                 :text (with-current-buffer buf
                         (save-restriction
                           (widen)
                           (buffer-substring-no-properties (point-min) (point-max))))))
          (path (list :path path)))))

(defun assistant-chat-attach (buffer att)
  "Queue attachment ATT for the next message of chat BUFFER.
BUFFER nil (or not a chat buffer) queues it for the next chat buffer opened.
The chat buffer shows it as a \"📎 name\" line under its last \"## You\"."
  (if (not (and buffer (assistant-chat-p buffer)))
      (setq assistant-chat--pending (append assistant-chat--pending (list att)))
    (with-current-buffer buffer
      (setq assistant-chat--attached (append assistant-chat--attached (list att)))
      (unless (assistant-chat-busy-p) ; else it shows when the answer is in
        (assistant-chat--show att)))))

(defun assistant-chat-detach (buffer)
  "Drop the attachments queued for chat BUFFER (nil: for the next one).
Their \"📎\" lines go too, when they are still as they were put there.
Return how many there were."
  (if (not (and buffer (assistant-chat-p buffer)))
      (prog1 (length assistant-chat--pending) (setq assistant-chat--pending nil))
    (with-current-buffer buffer
      (let ((n assistant-chat--shown)
            (end (marker-position assistant-chat--prompt)))
        (save-excursion
          (goto-char end)
          (let ((intact (> n 0)))
            (dotimes (_ n)
              (beginning-of-line)
              (setq intact (and intact (not (bobp)) (looking-at assistant-chat--clip)))
              (unless (bobp) (forward-char -1)))
            (when intact
              (delete-region (point) end)
              (set-marker assistant-chat--prompt (point)))))
        (prog1 (length assistant-chat--attached)
          (setq assistant-chat--attached nil
                assistant-chat--shown 0))))))

(defun assistant-chat-run (buf shown method params)
  "Show SHOWN as the user's turn in chat buffer BUF and send METHOD with PARAMS.
The answer streams into BUF.  For chat/send the buffer's conversation (and, for
a new one, its role) is filled in.  Return the request, or nil when BUF is
busy."
  (with-current-buffer buf
    (if (assistant-chat-busy-p)
        (progn (message "assistant: a request is still running here (C-c C-k cancels it)")
               nil)
      (delete-region assistant-chat--prompt (point-max))
      (goto-char (point-max))
      (insert "\n" shown "\n\n## Assistant\n\n")
      (set-marker assistant-chat--answer (point-max))
      (setq assistant-chat--streamed 0)
      (when (equal method "chat/send")
        (let ((items (delq nil (mapcar #'assistant-chat-attachment-item
                                       assistant-chat--attached))))
          (when items
            (setq params (plist-put params :context
                                    (vconcat (plist-get params :context) items)))))
        (setq assistant-chat--attached nil
              assistant-chat--shown 0)
        (if assistant-chat-conversation-id
            (setq params (plist-put params :conversation_id assistant-chat-conversation-id))
          (when assistant-chat-role
            (setq params (plist-put params :role assistant-chat-role)))))
      (when (and assistant-model (not (plist-get params :model)))
        (setq params (plist-put params :model assistant-model)))
      (setq assistant-chat-request
            (assistant-rpc-request
             method params
             (lambda (err result) (assistant-chat--finish buf err result))
             :on-notify (lambda (m p) (assistant-chat--notify buf m p))))
      (force-mode-line-update)
      assistant-chat-request)))

(defun assistant-chat-send (&optional message context)
  "Send MESSAGE (default: the text under the last \"## You\") from this buffer.
CONTEXT is a list of (NAME . TEXT) sent along with it."
  (interactive)
  (unless (assistant-chat-p)
    (user-error "Not an assistant chat buffer"))
  (let ((message (string-trim (or message (buffer-substring-no-properties
                                           assistant-chat--prompt (point-max))))))
    (if (string-empty-p message)
        (message "assistant: write a message under the last \"## You\" first")
      (assistant-chat-run
       (current-buffer) message "chat/send"
       (assistant-rpc-params
        :message message
        :context (and context
                      (vconcat (mapcar (lambda (c) (list :name (car c) :text (cdr c)))
                                       context))))))))

(defun assistant-chat-cancel (&optional buffer)
  "Cancel the request of chat BUFFER (default: this one); nil if it has none."
  (with-current-buffer (or buffer (current-buffer))
    (and (assistant-chat-p)
         (assistant-rpc-running-p assistant-chat-request)
         (assistant-rpc-cancel assistant-chat-request))))

(defun assistant-chat-title (conv)
  "The title of conversation CONV on one line, or nil."
  (let ((title (plist-get conv :title)))
    (when (stringp title)
      (let ((line (string-trim (replace-regexp-in-string "[ \t\n\r]+" " " title))))
        (unless (string-empty-p line) line)))))

(defun assistant-chat--render (conv)
  "Insert stored conversation CONV (a conversations/get result)."
  (insert "# " (or (assistant-chat-title conv) "Chat") "\n\n")
  (seq-doseq (m (plist-get conv :messages))
    (let ((role (plist-get m :role)))
      (insert "## " (pcase role ("user" "You") ("assistant" "Assistant")
                           ("system" "System") (_ role))
              "\n")
      (let ((context (plist-get m :context)))
        (when (sequencep context)
          (seq-doseq (c context)
            (when (and (listp c) (stringp (plist-get c :name)))
              (insert assistant-chat--clip
                      (replace-regexp-in-string "\n" " " (plist-get c :name)) "\n")))))
      (insert (or (plist-get m :content) "") "\n")
      (when (equal (plist-get m :status) "partial")
        (insert "\n_[partial]_\n"))
      (insert "\n"))))

(defun assistant-chat--kill-hook ()
  "Cancel the request of a chat buffer that is being killed."
  (assistant-chat-cancel))

(defun assistant-chat-open (&optional conversation display role)
  "Open a new chat buffer and return it.
CONVERSATION (a conversations/get result) is shown and continued.  DISPLAY is
the function that shows the buffer (default `pop-to-buffer-same-window').
ROLE is sent with the first message of a new conversation."
  (let ((buf (generate-new-buffer
              (format "*assistant: %s*"
                      (truncate-string-to-width
                       (or (and conversation (assistant-chat-title conversation)) "chat")
                       40)))))
    (with-current-buffer buf
      (if (require 'markdown-mode nil t) (markdown-mode) (text-mode))
      (assistant-chat-mode 1)
      (if conversation (assistant-chat--render conversation) (insert "# Chat\n\n"))
      (insert "## You")
      (setq assistant-chat--prompt (point-marker)
            assistant-chat-conversation-id (and conversation (plist-get conversation :id))
            assistant-chat-role role)
      (insert "\n")
      (setq assistant-chat--answer (copy-marker (point-max) t))
      (add-hook 'kill-buffer-hook #'assistant-chat--kill-hook nil t)
      (let ((queued assistant-chat--pending))
        (setq assistant-chat--pending nil)
        (dolist (att queued) (assistant-chat-attach buf att)))
      (goto-char (point-max)))
    (funcall (or display #'pop-to-buffer-same-window) buf)
    buf))

(defun assistant-chat-time (iso)
  "The daemon's UTC time ISO as local \"YYYY-MM-DD HH:MM\"."
  (condition-case nil
      (format-time-string "%Y-%m-%d %H:%M" (encode-time (iso8601-parse iso)))
    (error (format "%s" iso))))

(provide 'assistant-chat)
;;; assistant-chat.el ends here
