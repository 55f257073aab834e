;;; roles.el --- Roles: the daemon's named prompts, chosen in Emacs  -*- lexical-binding: t; -*-

;;; Commentary:

;; The upstream answers [[echo_system]] with the system prompt it was sent, so each
;; answer shows which prompt reached the provider.
;;
;; 1. `assistant-default-role' "pirate": a new chat starts with the pirate prompt, and
;;    its second message (which sends no role) keeps it.
;; 2. C-u M-x assistant-chat asks for a role, completing over the daemon's roles/list
;;    (names and descriptions noted; "pirate" picked).
;; 3. `assistant-replace-region' uses the daemon's "code-edit" role; after a
;;    [roles.code-edit] table is added to config.toml (the daemon reloads it by itself,
;;    no restart), the same command sends the edited prompt.

;;; Code:

(defun assistant-test-chat-answer (buf message)
  "Send MESSAGE in chat BUF and return the answer's text."
  (assistant-test-send buf message)
  (assistant-test-wait 10 (assistant-test-idle buf) message)
  (with-current-buffer buf
    (goto-char (point-max))
    (re-search-backward "^## Assistant\n\n")
    (let ((start (match-end 0)))
      (re-search-forward "\n\n## You\n")
      (buffer-substring-no-properties start (match-beginning 0)))))

(defun assistant-test-role-source (name)
  "Where role NAME comes from now, by the daemon's roles/list."
  (let (source done)
    (assistant-rpc-request
     "roles/list" nil
     (lambda (_err result)
       (seq-doseq (r (plist-get result :roles))
         (when (equal (plist-get r :name) name)
           (setq source (plist-get r :source))))
       (setq done t)))
    (assistant-test-wait 10 (lambda () done) "roles/list")
    source))

(defun assistant-test-replace (text)
  "Replace a buffer's TEXT with the answer to [[echo_system]]; the new text."
  (with-temp-buffer
    (insert text)
    (let ((req (assistant-replace-region (point-min) (point-max) "[[echo_system]] fix")))
      (assistant-test-wait 10 (lambda () (not (assistant-rpc-running-p req)))
                           "the replacement"))
    (buffer-string)))

(assistant-test-run
 (lambda ()
   (let ((assistant-default-role "pirate"))
     (let ((buf (assistant-chat)))
       (assistant-test-put "default_first" (assistant-test-chat-answer buf "[[echo_system]] hi"))
       (assistant-test-put "default_second"
                           (assistant-test-chat-answer buf "[[echo_system]] again"))
       (assistant-test-put "default_conversation"
                           (buffer-local-value 'assistant-chat-conversation-id buf))))
   (let* ((offered nil)
          (completing-read-function
           (lambda (_prompt table &rest _)
             ;; As a user would, wait until the daemon's roles are there to complete.
             (assistant-test-wait 10 (lambda () (all-completions "" table)) "the roles")
             (let ((annotate (completion-metadata-get (completion-metadata "" table nil)
                                                      'annotation-function)))
               (setq offered (mapcar (lambda (n) (concat n (funcall annotate n)))
                                     (all-completions "" table))))
             "pirate")))
     (let* ((current-prefix-arg '(4))
            (buf (call-interactively #'assistant-chat)))
       (assistant-test-put "offered" (vconcat offered))
       (assistant-test-put "prefix_answer"
                           (assistant-test-chat-answer buf "[[echo_system]] ahoy"))))
   (assistant-test-put "code_edit_before" (assistant-test-role-source "code-edit"))
   (assistant-test-put "replaced_builtin" (assistant-test-replace "some text"))
   (with-temp-buffer
     (insert "\n[roles.code-edit]\nsystem = \"EDITED PROMPT: answer in capitals\"\n")
     (append-to-file (point-min) (point-max) (getenv "EMACS_TEST_CONFIG")))
   (assistant-test-wait 20 (lambda () (equal (assistant-test-role-source "code-edit")
                                             "config"))
                        "the daemon to reload its config")
   (assistant-test-put "replaced_edited" (assistant-test-replace "some text"))))

;;; roles.el ends here
