;;; lost.el --- The daemon dies mid-answer  -*- lexical-binding: t; -*-

;;; Commentary:

;; While an answer streams, the daemon is killed (SIGKILL, no goodbye): the chat
;; buffer keeps what had arrived and says the connection was lost, and Emacs is free
;; at once.  The next message finds no daemon (autostart is off here) and says so.

;;; Code:

(assistant-test-run
 (lambda ()
   (setq assistant-autostart nil)
   (let ((buf (assistant-chat)) (pid nil))
     (assistant-rpc-request "daemon/status" nil
                            (lambda (_err result) (setq pid (plist-get result :pid))))
     (assistant-test-wait 10 (lambda () pid) "daemon/status")
     (assistant-test-send buf "[[slow:0.1]] [[words:100]] go on")
     (assistant-test-wait 10 (lambda () (with-current-buffer buf
                                          (save-excursion
                                            (goto-char (point-min))
                                            (search-forward "w3" nil t))))
                          "the answer to start")
     (let ((t0 (float-time)))
       (signal-process pid 'SIGKILL)
       (assistant-test-wait 5 (assistant-test-idle buf) "the lost connection")
       (assistant-test-put "lost_ms" (assistant-test-ms t0)))
     (assistant-test-put "lost_lines" (assistant-test-lines buf))
     ;; The user writes the next message later: by then the process has fully exited
     ;; (its connections close a moment before its listening socket does).
     (assistant-test-wait 5 (lambda () (member (alist-get 'state (process-attributes pid))
                                               '(nil "Z")))
                          "the daemon to exit")
     ;; Even then the kernel may still accept a connection for a moment (and drop it):
     ;; wait until the socket refuses one, as it does by the time a person types again.
     (assistant-test-wait 5 (lambda ()
                              (condition-case nil
                                  (progn (delete-process
                                          (make-network-process
                                           :name "probe" :family 'local
                                           :service (assistant-rpc-socket-path)))
                                         nil)
                                (file-error t)))
                          "the socket to refuse connections")
     (assistant-test-send buf "anyone there?")
     (assistant-test-wait 5 (assistant-test-idle buf) "the next error")
     (assistant-test-put "lines" (assistant-test-lines buf)))))

;;; lost.el ends here
