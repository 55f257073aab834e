;;; unavailable.el --- No daemon: the chat says why, soon  -*- lexical-binding: t; -*-

;;; Commentary:

;; With nothing on the socket, a chat message ends with an error in the buffer: at
;; once when autostart is off or the start command does not exist, and within seconds
;; (not the whole start timeout) when the started command exits at once.

;;; Code:

(defun assistant-test-unavailable (autostart command)
  "Send a message with AUTOSTART and daemon COMMAND; what the buffer shows, how soon."
  (let ((assistant-autostart autostart)
        (assistant-daemon-command command)
        (buf (assistant-chat))
        (t0 (float-time)))
    (assistant-test-send buf "hello?")
    (assistant-test-wait 20 (assistant-test-idle buf) "the error")
    (list (cons "ms" (assistant-test-ms t0))
          (cons "lines" (assistant-test-lines buf)))))

(assistant-test-run
 (lambda ()
   (setq assistant-start-timeout 15)
   (assistant-test-put "off" (assistant-test-unavailable nil '("assistantd")))
   (assistant-test-put "missing"
                       (assistant-test-unavailable t '("/nonexistent/assistantd")))
   (assistant-test-put "exits"
                       (assistant-test-unavailable
                        t '("sh" "-c" "echo no config here >&2; exit 3")))))

;;; unavailable.el ends here
